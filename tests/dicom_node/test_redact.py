"""The UID hashes the node writes to logs and audit records are salted with the audit salt:
a list of a PACS's UIDs hashed by anyone does not give them back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from service.audit import hash_uid
from service.dicom_node import redact

UID = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"


@pytest.fixture(autouse=True)
def unsalted_after() -> Iterator[None]:
    yield
    redact.use_salt("")


def test_log_and_audit_hashes_follow_the_salt() -> None:
    redact.use_salt("")
    local = redact.uid_hash(UID)
    assert len(local) == 12 and local == redact.uid_hash(UID)  # stable: a log reader follows it
    unsalted = hashlib.sha256(f"scantune-dicom:{UID}".encode()).hexdigest()[:12]
    redact.use_salt("site-salt")
    salted = redact.uid_hash(UID)
    assert salted not in (local, unsalted) and salted == redact.uid_hash(UID)
    redact.use_salt("other-salt")
    assert redact.uid_hash(UID) != salted
    assert redact.uid_hash(None) == "-"


def test_a_retrievals_audit_names_the_study_as_a_purge_of_it_does() -> None:
    redact.use_salt("site-salt")
    assert redact.audit_hash(UID) == hash_uid(UID, "site-salt")  # service.dicom_node.purges
    assert redact.audit_hash(UID) != hash_uid(UID, "")
