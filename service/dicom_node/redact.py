"""What of a DICOM object may reach a log: UIDs hashed, nothing else (no names, no IDs)."""

from __future__ import annotations

import hashlib


def uid_hash(uid: str | None) -> str:
    """A short stable stand-in for a UID in logs: the same UID always reads the same, and the
    log alone does not give it back."""
    if not uid:
        return "-"
    return hashlib.sha256(f"scantune-dicom:{uid}".encode()).hexdigest()[:12]
