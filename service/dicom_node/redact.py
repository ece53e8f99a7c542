"""What of a DICOM object may reach a log or an audit record: UIDs hashed, nothing else (no
names, no IDs).

The hashes are salted with the deployment's audit salt (`SCANTUNE_AUDIT_SALT`, set once as
the node starts: `use_salt`): a UID is no secret (an organisation's root and a date), so
unsalted, a list of a PACS's UIDs would give the hashes back. Unset (a local run), a fixed
prefix stands in for it."""

from __future__ import annotations

import hmac
from hashlib import sha256

from service.audit import hash_uid

_salt = ""


def use_salt(salt: str) -> None:
    """The salt of every hash from now on (the node's audit salt); called as it starts."""
    global _salt
    _salt = salt


def uid_hash(uid: str | None) -> str:
    """A short stable stand-in for a UID in logs: the same UID always reads the same under one
    salt, and the log alone does not give it back."""
    if not uid:
        return "-"
    key = (_salt or "scantune-dicom").encode()
    return hmac.new(key, uid.encode(), sha256).hexdigest()[:12]


def audit_hash(uid: str) -> str:
    """A study UID as audit records name it (`service.audit.hash_uid` under the salt): the
    same hash a purge of the study records, so the two are matched in the trail."""
    return hash_uid(uid, _salt)
