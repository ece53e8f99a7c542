"""How a send ends when the destination does not take what was sent: tried again later, or
refused for what it is. Shared by every sender (DICOM, HTTP, HL7, FHIR)."""

from __future__ import annotations

# HTTP answers that refuse the request itself (malformed, too large, a type or content the
# server will not take); the rest (401/403 credentials, 404 a wrong URL, 408, 429, 5xx) may
# pass once the server or the settings are mended, so they are retried.
REFUSING_HTTP = frozenset({400, 413, 415, 422})


class NotDelivered(Exception):
    """The destination did not take the result (its text names no patient data)."""


class Rejected(NotDelivered):
    """The destination refused this result for what it is: not retried."""
