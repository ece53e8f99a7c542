"""What a scan may cost to decode (a leaf module): every decoder checks its scan against these
before it decodes, so limits on decoded size are added here, in one place."""

from __future__ import annotations

MAX_PIXELS = 64_000_000
"""Largest scan accepted (pixels); bigger files are refused rather than exhausting memory."""

HELPER_TIMEOUT_S = 10.0
"""Longest one scan may take in the GDCM helper, its start included (a 64 MP JPEG-LS frame:
~3 s); past it the scan is refused and the helper restarted (`models.scans.helper_pool`).
Well under a sync worker's 30 s timeout (`scantune serve`), so a scan that hangs the helper
is a 422, not a killed worker and a 502."""
