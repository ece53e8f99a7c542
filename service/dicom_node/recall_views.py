"""What `GET /v1/recalls[/{id}]` shows of a recall (`service.dicom_node.recalls`): its
request, whether it is applied or lifted, the series it recalled, the deliveries it stopped,
and its withdrawals by state; one recall also names those not done, each with the reason it
is sent with (a recall lifted and made anew has a new reason; withdrawals keep theirs) and,
while it is still being tried, when it is tried next."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.dicom_node.ledger import iso_time
from service.dicom_node.tables import RecallRow, SeriesRow, WithdrawalRow

WITHDRAWAL_STATES = ("pending", "done", "rejected", "expired", "not_kept")
OPEN_LISTED = 200  # withdrawals not done that a recall's view lists


def recall_view(session: Session, row: RecallRow, *, listed: bool) -> dict[str, Any]:
    """The recall; `listed` adds its withdrawals not done (`open`)."""
    states = Counter(
        session.scalars(select(WithdrawalRow.state).where(WithdrawalRow.recall_id == row.id))
    )
    series = session.scalar(
        select(func.count()).select_from(SeriesRow)
        .where(SeriesRow.model == row.model, SeriesRow.version == row.version)
        .where(SeriesRow.state == "recalled")
    )  # fmt: skip
    view: dict[str, Any] = {
        "id": row.id,
        "model": row.model,
        "version": row.version,
        "reason": row.reason,
        "requested_by": row.requested_by,
        "state": row.state,
        "created_at": iso_time(row.created_at),
        "applied_at": iso_time(row.applied_at),
        "lifted_at": iso_time(row.lifted_at),
        "lifted_by": row.lifted_by,
        "lift_reason": row.lift_reason,
        "series": int(series or 0),
        "stopped": row.stopped,
        "withdrawals": {state: states.get(state, 0) for state in WITHDRAWAL_STATES},
    }
    if listed:
        view["open"] = _open(session, row)
    return view


def _open(session: Session, recall: RecallRow) -> list[dict[str, Any]]:
    """The withdrawals not done, first those a person must act on (not kept, rejected,
    expired), then those still being tried."""
    rows = session.execute(
        select(WithdrawalRow, SeriesRow.study_uid)
        .join(SeriesRow, SeriesRow.id == WithdrawalRow.series_id)
        .where(WithdrawalRow.recall_id == recall.id, WithdrawalRow.state != "done")
        .order_by((WithdrawalRow.state == "pending").asc(), WithdrawalRow.id)
        .limit(OPEN_LISTED)
    ).all()
    return [
        {
            "series_id": w.series_id,
            "study_instance_uid": study,
            "destination": w.destination,
            "state": w.state,
            "reason": w.reason or recall.reason,  # None: made during an upgrade, see tables
            "attempts": w.attempts,
            "last_error": w.last_error,
            "next_attempt_at": iso_time(w.next_attempt_at) if w.state == "pending" else None,
        }
        for w, study in rows
    ]
