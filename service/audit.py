"""The audit trail: append-only records of security-relevant actions.

Each record (time, client, action, target, outcome, request id, and a few counts) goes to
the `scantune.audit` logger as one JSON line and, in the training service, to the job
store's `audit_events` table, which `GET /v1/audit` reads. Records name clients, models,
versions and job ids; never file names, tags or pixels. A study UID appears only as a
salted hash (`hash_uid`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

log = logging.getLogger("scantune.audit")
EXTENSION = "scantune.audit"

# What the training service records (and `GET /v1/audit` filters by); the inference service
# adds its predictions, which go to its JSON log lines only.
TrainingAction = Literal[
    "job_submitted",
    "job_checked",
    "job_cancelled",
    "job_finished",
    "model_published",
    "alias_moved",
    "access_changed",
    "notes_changed",
    "model_withdrawn",
    "model_reinstated",
    "outcomes_reported",
    "outcomes_retracted",
    "key_refused",
    "key_expired",
    "access_denied",
    "rate_limited",
]
ACTIONS = (*get_args(TrainingAction), "prediction_served")

Sink = Callable[["AuditRecord"], None]


@dataclass(frozen=True)
class AuditRecord:
    action: str
    client: str
    target: str
    outcome: str
    request_id: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out


class AuditTrail:
    """Writes records to the audit logger and to an optional durable sink."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink

    def record(self, record: AuditRecord) -> None:
        log.info("audit %s", record.action, extra={"audit": record.to_dict()})
        if self.sink is not None:
            try:
                self.sink(record)
            except Exception:  # the action itself has happened; say the record is missing
                log.exception("audit record %s could not be stored", record.action)


def hash_uid(uid: str, salt: str) -> str:
    """A study (or series) UID as audit records carry it: a salted SHA-256, 32 hex digits."""
    return hmac.new(salt.encode(), uid.encode(), hashlib.sha256).hexdigest()[:32]


def record(
    action: str,
    *,
    client: str,
    target: str,
    outcome: str,
    request_id: str | None = None,
    **detail: Any,
) -> AuditRecord:
    """Record an action in the current app's trail (the logger alone outside a request)."""
    from flask import current_app, g, has_app_context

    trail = AuditTrail()
    if has_app_context():
        trail = current_app.extensions.get(EXTENSION, trail)
        request_id = request_id or g.get("request_id")
    entry = AuditRecord(action, client, target, outcome, request_id, detail=detail)
    trail.record(entry)
    return entry
