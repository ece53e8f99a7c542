"""The audit trail's table in the job store: appended to, read in pages, never updated."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from service.audit import AuditRecord
from service.jobs.store import as_utc
from service.jobs.tables import AuditRow
from service.paging import newest_first, split_page


class AuditStore:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def add(self, record: AuditRecord) -> None:
        row = AuditRow(
            at=record.at,
            client=record.client[:255],
            action=record.action,
            target=record.target[:255],
            outcome=record.outcome[:32],
            request_id=record.request_id,
            detail=record.detail,
        )
        with self._sessions.begin() as session:
            session.add(row)

    def page(
        self,
        *,
        client: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; pass the returned cursor for the next page (None: no more)."""
        query = newest_first(select(AuditRow), AuditRow.seq, "audit", cursor, limit)
        if client is not None:
            query = query.where(AuditRow.client == client)
        if action is not None:
            query = query.where(AuditRow.action == action)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        if until is not None:
            query = query.where(AuditRow.at < until)
        with self._sessions() as session:
            rows = list(session.scalars(query))
        page, next_cursor = split_page(rows, limit, "audit", lambda row: row.seq)
        return [_view(r) for r in page], next_cursor


def _view(row: AuditRow) -> dict[str, Any]:
    at = as_utc(row.at)
    return {
        "at": at.isoformat() if at else None,
        "client": row.client,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "request_id": row.request_id,
        "detail": row.detail,
    }
