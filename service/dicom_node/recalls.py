"""Recalls at the node: a model version found unsafe has its results stopped and withdrawn.

A recall (`POST /v1/recalls`) is recorded first; the queue worker applies it, because it
alone sends, so that no result of the version goes out after the recall is applied (the
worker also holds back any due delivery of a recalled version before it sends). Applying it:
- each series the version classified ends `recalled`;
- its deliveries not yet made (pending, or rejected and kept for a resend) end `recalled`,
  never sent;
- each one made becomes a *withdrawal*, sent like a delivery, with back-off: an IOCM
  rejection note to a PACS, an HL7 correction, FHIR entered-in-error
  (`Sender.withdraw`). It needs the result: a delivered one is kept
  `dicom_recall_keep_h` for this; one deleted before is `not_kept`, listed for a person.
Once a series has no withdrawal pending, its result is deleted; one a destination refused
keeps it until the retention limit, to be sent again once the destination is mended
(`POST /v1/recalls/{id}/retry`).

A recall made in error, or of a version put back in service, is lifted (`POST
/v1/recalls/{id}/lift`): from then on the worker holds nothing of the version back, and the
series it classifies are delivered like any other. What the recall did stays: its series
stay `recalled`, and its withdrawals, made or pending, go on (a result taken back from one
destination is taken back from all). A recalled series' instances sent again (the modality,
a retrieval) are new work, read by the version its route names now, under result UIDs of its
own (`report.result_uids`' generation): so the studies a recall took back are read again by
the version that replaces it, or, once the recall is lifted, by the same one. Recalled
again, the version's lifted recall is made anew (one row per version), with the new reason,
and applied to the series classified since the lift; each withdrawal keeps the reason it was
made with, so those of the first round still pending are sent with the first reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.dicom_node.recall_views import recall_view
from service.dicom_node.tables import DeliveryRow, RecallRow, SeriesRow, WithdrawalRow
from service.jobs.store import utcnow
from service.jobs.tables import as_utc

CLASSIFIED = ("delivering", "done", "rejected")  # the states of a series with a result
NOT_SENT = ("pending", "rejected")  # deliveries a recall stops
IN_FORCE = RecallRow.state != "lifted"  # a recall whose version's results are held back
# A withdrawal's reason (its recall joined): its own, that of the recall round that made it;
# its recall's only for one made without (by a node of the release before, during an upgrade).
REASON = func.coalesce(WithdrawalRow.reason, RecallRow.reason)


@dataclass(frozen=True)
class DueWithdrawal:
    withdrawal_id: int
    series_id: int
    destination: str
    result_file: str
    reason: str
    attempts: int


class RecallBook:
    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        """`lock`: the work queue's, held by every change to the queue's rows."""
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._lock = lock

    # --- asking --------------------------------------------------------------------------------

    def request(self, model: str, version: int, reason: str, by: str) -> tuple[int, bool]:
        """Record the recall of `model` `version` (the worker applies it); (its id, whether
        it is new). A version recalled before keeps its first recall and reason, unless that
        recall was lifted: then it is made anew, with this reason and requester."""
        row = RecallRow(
            model=model, version=version, reason=reason[:255], requested_by=by[:255],
            state="new", stopped=0, created_at=utcnow(),
        )  # fmt: skip
        try:
            with self._sessions.begin() as session:
                session.add(row)
            return row.id, True
        except IntegrityError:  # recalled already (perhaps by a request just before)
            found = self._again(model, version, reason, by)
            if found is None:
                raise
            return found

    def _again(self, model: str, version: int, reason: str, by: str) -> tuple[int, bool] | None:
        """The version's recall (None: none), made anew (True) if it was lifted: `new`
        again, for the worker to apply to the series classified since the lift."""
        with self._lock, self._sessions.begin() as session:
            found = session.scalars(
                select(RecallRow).where(RecallRow.model == model)
                .where(RecallRow.version == version).with_for_update()
            ).one_or_none()  # fmt: skip
            if found is None or found.state != "lifted":
                return None if found is None else (found.id, False)
            found.state, found.reason, found.requested_by = "new", reason[:255], by[:255]
            found.created_at, found.applied_at = utcnow(), None
            found.lifted_at = found.lifted_by = found.lift_reason = None
            return found.id, True

    def lift(self, recall_id: int, reason: str, by: str, *, made_by: str | None = None) -> bool:
        """Lift the recall: the version's results are held back no more. What it did stays
        (its series recalled, its withdrawals going on). False when it is lifted already,
        unknown, or (with `made_by`) not requested by one whose name starts so."""
        with self._lock, self._sessions.begin() as session:
            found = session.get(RecallRow, recall_id, with_for_update=True)
            if found is None or found.state == "lifted":
                return False
            if made_by is not None and not found.requested_by.startswith(made_by):
                return False
            found.state, found.lifted_at = "lifted", utcnow()
            found.lifted_by, found.lift_reason = by[:255], reason[:255]
            return True

    def unrecalled_versions(self) -> list[tuple[str, int]]:
        """The versions that gave results here (delivering, delivered or refused) and are
        not recalled (or their recall was lifted): those whose recall at the registry the
        node follows."""
        with self._sessions() as session:
            rows = session.execute(
                select(SeriesRow.model, SeriesRow.version)
                .outerjoin(
                    RecallRow,
                    (RecallRow.model == SeriesRow.model)
                    & (RecallRow.version == SeriesRow.version)
                    & IN_FORCE,
                )
                .where(SeriesRow.state.in_(CLASSIFIED), SeriesRow.version.is_not(None))
                .where(RecallRow.id.is_(None))
                .distinct()
                .order_by(SeriesRow.model, SeriesRow.version)
            ).all()
        return [(str(model), int(version)) for model, version in rows if version is not None]

    def made_by(self, prefix: str) -> list[tuple[int, str, int]]:
        """The recalls in force requested by one whose name starts with `prefix`: (id, model,
        version)."""
        with self._sessions() as session:
            rows = session.execute(
                select(RecallRow.id, RecallRow.model, RecallRow.version)
                .where(IN_FORCE, RecallRow.requested_by.startswith(prefix, autoescape=True))
                .order_by(RecallRow.id)
            ).all()
        return [(int(i), str(model), int(version)) for i, model, version in rows]

    def lifted_at(self, model: str, version: int) -> datetime | None:
        """When the version's recall was lifted; None when it is not recalled, or in force."""
        with self._sessions() as session:
            lifted = session.scalar(
                select(RecallRow.lifted_at).where(RecallRow.model == model)
                .where(RecallRow.version == version, RecallRow.state == "lifted")
            )  # fmt: skip
        return as_utc(lifted)

    def held(self, series_ids: set[int]) -> set[int]:
        """Those of `series_ids` whose version is recalled (not lifted): nothing of them may
        be sent."""
        if not series_ids:
            return set()
        with self._sessions() as session:
            return set(
                session.scalars(
                    select(SeriesRow.id)
                    .join(
                        RecallRow,
                        (RecallRow.model == SeriesRow.model)
                        & (RecallRow.version == SeriesRow.version),
                    )
                    .where(SeriesRow.id.in_(series_ids), IN_FORCE)
                )
            )

    # --- applying (the worker) -----------------------------------------------------------------

    def apply_new(self) -> list[int]:
        """Apply the recalls not yet applied; the ids of the series they recalled."""
        with self._lock, self._sessions.begin() as session:
            recalled: list[int] = []
            for recall in session.scalars(select(RecallRow).where(RecallRow.state == "new")):
                recalled += self._apply(session, recall, None)
                recall.state, recall.applied_at = "applied", utcnow()
            return recalled

    def apply_to(self, series_ids: set[int]) -> None:
        """Apply their recall to series classified (by a version recalled) after it was
        applied: a classification finishing as the recall came. One lifted meanwhile is not."""
        with self._lock, self._sessions.begin() as session:
            for series_id in series_ids:
                series = session.get_one(SeriesRow, series_id)
                recall = session.scalars(
                    select(RecallRow).where(RecallRow.model == series.model)
                    .where(RecallRow.version == series.version, IN_FORCE)
                ).one_or_none()  # fmt: skip
                if recall is not None:
                    self._apply(session, recall, series_id)

    def _apply(self, session: Session, recall: RecallRow, series_id: int | None) -> list[int]:
        now = utcnow()
        query = select(SeriesRow).where(
            SeriesRow.model == recall.model,
            SeriesRow.version == recall.version,
            SeriesRow.state.in_(CLASSIFIED),
        )
        if series_id is not None:
            query = query.where(SeriesRow.id == series_id)
        recalled = []
        for series in session.scalars(query):
            for delivery in session.scalars(
                select(DeliveryRow).where(DeliveryRow.series_id == series.id)
            ):
                if delivery.state in NOT_SENT:
                    delivery.state = "recalled"
                    recall.stopped += 1
                elif delivery.state == "done":
                    state = "pending" if series.result_file else "not_kept"
                    session.add(
                        WithdrawalRow(
                            recall_id=recall.id, series_id=series.id,
                            destination=delivery.destination, state=state, attempts=0,
                            reason=recall.reason, next_attempt_at=now, created_at=now,
                        )
                    )  # fmt: skip
            series.state, series.finished_at = "recalled", series.finished_at or now
            recalled.append(series.id)
        return recalled

    # --- withdrawing (the worker) ------------------------------------------------------------

    def due(self, limit: int = 16) -> list[DueWithdrawal]:
        """The withdrawals due, each with the reason of the recall round that made it."""
        with self._sessions() as session:
            rows = session.execute(
                select(WithdrawalRow, SeriesRow.result_file, REASON)
                .join(SeriesRow, SeriesRow.id == WithdrawalRow.series_id)
                .join(RecallRow, RecallRow.id == WithdrawalRow.recall_id)
                .where(WithdrawalRow.state == "pending")
                .where(WithdrawalRow.next_attempt_at <= utcnow())
                .order_by(WithdrawalRow.next_attempt_at)
                .limit(limit)
            ).all()
        return [
            DueWithdrawal(w.id, w.series_id, w.destination, file or "", reason, w.attempts)
            for w, file, reason in rows
        ]

    def ended(self, withdrawal_id: int, state: str, error: str | None = None) -> bool:
        """The withdrawal `done` or `rejected`; True when its series has none pending left
        and none refused (kept to be sent again, `retry`): its result may go."""
        with self._lock, self._sessions.begin() as session:
            row = session.get_one(WithdrawalRow, withdrawal_id)
            row.state, row.last_error = state, (error or None) and str(error)[:255]
            row.attempts += 1
            row.withdrawn_at = utcnow() if state == "done" else None
            session.flush()
            return not _pending(session, row.series_id, ("pending", "rejected"))

    def retry(self, recall_id: int) -> int:
        """Put the recall's refused withdrawals back in line, due now (a person mended the
        destination), those whose result is still kept; how many."""
        with self._lock, self._sessions.begin() as session:
            ids = list(
                session.scalars(
                    select(WithdrawalRow.id)
                    .join(SeriesRow, SeriesRow.id == WithdrawalRow.series_id)
                    .where(WithdrawalRow.recall_id == recall_id)
                    .where(WithdrawalRow.state == "rejected", SeriesRow.result_file.is_not(None))
                )
            )
            session.execute(
                update(WithdrawalRow)
                .where(WithdrawalRow.id.in_(ids))
                .values(state="pending", next_attempt_at=utcnow())
            )
            return len(ids)

    def failed(self, withdrawal_id: int, error: str, delay_s: float) -> None:
        with self._lock, self._sessions.begin() as session:
            row = session.get_one(WithdrawalRow, withdrawal_id)
            row.attempts += 1
            row.last_error = error[:255]
            row.next_attempt_at = utcnow() + timedelta(seconds=delay_s)

    def expire(self, cutoff: datetime) -> list[int]:
        """End withdrawals pending since before `cutoff` (the retention limit); the series
        left with none pending."""
        with self._lock, self._sessions.begin() as session:
            ids = set(
                session.scalars(
                    select(WithdrawalRow.series_id).where(
                        WithdrawalRow.state == "pending", WithdrawalRow.created_at < cutoff
                    )
                )
            )
            session.execute(
                update(WithdrawalRow)
                .where(WithdrawalRow.state == "pending", WithdrawalRow.created_at < cutoff)
                .values(state="expired", last_error="past the retention limit")
            )
            return [i for i in ids if not _pending(session, i)]

    def pending(self, series_id: int) -> bool:
        """Whether a withdrawal of the series is still to be sent (its result is needed)."""
        with self._sessions() as session:
            return _pending(session, series_id)

    def refused_kept(self, cutoff: datetime) -> list[int]:
        """Series whose results are kept for refused withdrawals to be sent again, recalled
        before `cutoff` (the retention limit), with nothing pending: to be deleted."""
        with self._sessions() as session:
            ids = set(
                session.scalars(
                    select(WithdrawalRow.series_id)
                    .join(SeriesRow, SeriesRow.id == WithdrawalRow.series_id)
                    .where(WithdrawalRow.state == "rejected", WithdrawalRow.created_at < cutoff)
                    .where(SeriesRow.result_file.is_not(None))
                )
            )
            return sorted(i for i in ids if not _pending(session, i))

    def kept_past(self, cutoff: datetime) -> list[int]:
        """Delivered series whose result is still kept for a recall but ended before
        `cutoff`: past `dicom_recall_keep_h`, to be deleted."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(SeriesRow.id).where(
                        SeriesRow.state == "done",
                        SeriesRow.result_file.is_not(None),
                        SeriesRow.finished_at < cutoff,
                    )
                )
            )

    # --- reading ---------------------------------------------------------------------------------

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._sessions() as session:
            rows = session.scalars(select(RecallRow).order_by(RecallRow.id.desc()).limit(limit))
            return [recall_view(session, row, listed=False) for row in rows]

    def get(self, recall_id: int) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.get(RecallRow, recall_id)
            return recall_view(session, row, listed=True) if row is not None else None


def _pending(session: Session, series_id: int, states: tuple[str, ...] = ("pending",)) -> bool:
    """Whether a withdrawal of the series is in one of `states`."""
    return (
        session.scalar(
            select(WithdrawalRow.id)
            .where(WithdrawalRow.series_id == series_id, WithdrawalRow.state.in_(states))
            .limit(1)
        )
        is not None
    )
