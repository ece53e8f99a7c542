"""The RIS's orders, kept in the job store's database (table `dicom_orders`): each waits until
the order source holds the studies of its accession number, which are then fetched and
classified like any study the node receives.

An order is taken (and only then acknowledged) when it is committed; one for an accession
number that already has an order waiting adds nothing; a cancel ends the waiting ones. An
order still waiting `wait` after it came expires: its exam never reached the PACS."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from service.dicom_node.ledger import iso_time
from service.dicom_node.tables import OrderRow
from service.jobs.store import as_utc, utcnow
from service.paging import newest_page

Taken = Literal["queued", "duplicate"]


@dataclass(frozen=True)
class DueOrder:
    id: int
    accession: str
    attempts: int
    created_at: datetime


class OrderBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._lock = threading.Lock()

    def take(self, accession: str) -> Taken:
        """Keep an order for `accession`, to be fetched at once (unless one is waiting)."""
        with self._lock, self._sessions.begin() as session:
            waiting = session.scalar(
                select(OrderRow.id)
                .where(OrderRow.accession == accession, OrderRow.state == "waiting")
                .limit(1)
            )
            if waiting is not None:
                return "duplicate"
            now = utcnow()
            session.add(
                OrderRow(
                    accession=accession,
                    state="waiting",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            return "queued"

    def cancel(self, accession: str) -> int:
        """End the orders of `accession` still waiting; how many there were."""
        with self._lock, self._sessions.begin() as session:
            rows = session.scalars(
                select(OrderRow).where(OrderRow.accession == accession, OrderRow.state == "waiting")
            ).all()
            for row in rows:
                row.state, row.finished_at = "cancelled", utcnow()
            return len(rows)

    def due(self, limit: int = 10) -> list[DueOrder]:
        """Waiting orders whose next attempt is due, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(
                select(OrderRow)
                .where(OrderRow.state == "waiting", OrderRow.next_attempt_at <= utcnow())
                .order_by(OrderRow.next_attempt_at, OrderRow.id)
                .limit(limit)
            )
            return [DueOrder(r.id, r.accession, r.attempts, as_utc(r.created_at)) for r in rows]

    def fetched(self, order_id: int, studies: list[str]) -> None:
        self._finish(order_id, "fetched", studies=json.dumps(studies), last_error=None)

    def blocked(self, order_id: int, error: str) -> None:
        """Its studies are all blocked by a purge: it ends fetched, with none, saying why."""
        self._finish(order_id, "fetched", studies="[]", last_error=error[:255])

    def expired(self, order_id: int, error: str) -> None:
        self._finish(order_id, "expired", last_error=error[:255])

    def later(self, order_id: int, error: str, delay_s: float) -> None:
        """Not fetched this time (the study is not there yet, the source is away): try again."""
        with self._lock, self._sessions.begin() as session:
            row = session.get_one(OrderRow, order_id)
            if row.state != "waiting":  # cancelled meanwhile
                return
            row.attempts += 1
            row.last_error = error[:255]
            row.next_attempt_at = utcnow() + timedelta(seconds=delay_s)

    def _finish(self, order_id: int, state: str, **values: Any) -> None:
        with self._lock, self._sessions.begin() as session:
            row = session.get_one(OrderRow, order_id)
            if row.state != "waiting":
                return
            row.state, row.finished_at = state, utcnow()
            for name, value in values.items():
                setattr(row, name, value)

    def page(self, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """Orders newest first, for the operators' view."""
        with Session(self.engine) as session:
            rows, next_cursor = newest_page(
                session, select(OrderRow), OrderRow.id, "orders", cursor, limit
            )
            return [_view(row) for row in rows], next_cursor


def _view(row: OrderRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "accession_number": row.accession,
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "study_instance_uids": json.loads(row.studies) if row.studies else [],
        "created_at": iso_time(row.created_at),
        "next_attempt_at": iso_time(row.next_attempt_at) if row.state == "waiting" else None,
        "finished_at": iso_time(row.finished_at),
    }
