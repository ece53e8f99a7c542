"""The durable work queue: what the node has received, classified and still has to deliver.

Every step commits before the node acknowledges it (a C-STORE answered Success, a STOW-RS
answered 200), so a restart, even a SIGKILL, loses nothing: on start, `recover` puts a series
whose classification was cut short back to waiting, and deliveries carry on where they were.
A result is identified by its SR SOP Instance UID, which is derived from the series' instances
(`service.dicom_node.report.result_uids`), so redoing a step makes the same result, never a
second one. Mutations hold one lock: a node is one process, and find-or-create of a series
must not race between two associations sending the same series. Given the purges' blocks, an
instance's write refuses a study they block (`PurgeBlocks.refuse`) before it commits.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.dicom_node.purge_blocks import PurgeBlocks
from service.dicom_node.spool import maps_file
from service.dicom_node.tables import PENDING_STATES, DeliveryRow, InstanceRow, SeriesRow
from service.jobs.store import as_utc, utcnow

Outcome = Literal["stored", "duplicate", "unrouted"]
UNCLASSIFIED_ENDS = ("failed", "expired")  # work items that ended with no result made


@dataclass(frozen=True)
class InstanceMeta:
    """What the node keeps of an instance: UIDs and the attributes routing matches on."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    body_part: str
    calling_ae: str


@dataclass(frozen=True)
class Due:
    """A delivery to attempt: the result file to one destination."""

    delivery_id: int
    series_id: int
    destination: str
    result_file: str
    attempts: int


@dataclass(frozen=True)
class Stats:
    depth: int
    oldest_age_s: float


class WorkQueue:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._lock = self.lock = threading.Lock()  # `lock`: shared with Recall- and PurgeBook

    # --- intake ----------------------------------------------------------------------------

    def is_known(self, meta: InstanceMeta) -> bool:
        """Whether this instance was received before (a resend): acknowledged, not kept."""
        with self._sessions() as session:
            return _known(session, meta) is not None

    def note_unrouted(self, meta: InstanceMeta, blocks: PurgeBlocks | None = None) -> bool:
        """Record a series no route matched; True the first time (it is counted once).
        `blocks`: a study they block is refused (`purge_blocks.Blocked`), nothing written."""
        with self._lock, self._sessions.begin() as session:
            latest = _latest(session, meta.series_uid)
            if latest is not None and latest.state == "unrouted":
                return False
            _new_series(session, meta, latest, state="unrouted", model=None, alias=None)
            if blocks is not None:
                blocks.refuse(session, meta.study_uid)
            return True

    def add_instance(
        self,
        meta: InstanceMeta,
        model: str,
        alias: str | None,
        file: str,
        destinations: list[str] | None = None,
        blocks: PurgeBlocks | None = None,
    ) -> tuple[Outcome, int]:
        """Join the instance to its series' open work item (a new one when the series has
        none open, sending its result to `destinations`, keys; None: every destination); a
        resent instance is a duplicate and joins nothing. `blocks`: as `note_unrouted`."""
        with self._lock, self._sessions.begin() as session:
            known = _known(session, meta)
            if known is not None:
                return "duplicate", known
            latest = _latest(session, meta.series_uid)
            if latest is None or latest.state != "receiving":
                latest = _new_series(session, meta, latest, "receiving", model, alias)
                if destinations is not None:
                    latest.destinations = json.dumps(destinations)
            now = utcnow()
            latest.last_instance_at = now
            session.add(
                InstanceRow(
                    series_id=latest.id,
                    sop_instance_uid=meta.sop_instance_uid,
                    sop_class_uid=meta.sop_class_uid,
                    file=file,
                    received_at=now,
                )
            )
            if blocks is not None:
                blocks.refuse(session, meta.study_uid)
            return "stored", latest.id

    # --- classification ----------------------------------------------------------------------

    def claim_quiet(self, quiet_s: float) -> SeriesRow | None:
        """The oldest series quiet for `quiet_s`, now marked classifying, or None."""
        now = utcnow()
        cutoff = now - timedelta(seconds=quiet_s)
        with self._lock, self._sessions.begin() as session:
            row = session.scalars(
                select(SeriesRow)
                .where(SeriesRow.state == "receiving", SeriesRow.last_instance_at <= cutoff)
                .where((SeriesRow.next_attempt_at.is_(None)) | (SeriesRow.next_attempt_at <= now))
                .order_by(SeriesRow.last_instance_at)
                .limit(1)
            ).first()
            if row is not None:
                row.state = "classifying"
            return row

    def instances(self, series_id: int) -> list[InstanceRow]:
        query = select(InstanceRow).where(InstanceRow.series_id == series_id)
        with self._sessions() as session:
            return list(session.scalars(query.order_by(InstanceRow.id)))

    def classified(
        self,
        series_id: int,
        result_uid: str,
        result_file: str,
        destinations: list[str],
        skipped: dict[str, str] | None = None,
        version: int | None = None,
    ) -> bool:
        """The result is made and on disk: queue one delivery per destination; record those
        `skipped` (destination: why) as such, never sent. False: the series' study was purged
        meanwhile (`service.dicom_node.purges`), and the result must go nowhere."""
        now = utcnow()
        with self._lock, self._sessions.begin() as session:
            row = session.get_one(SeriesRow, series_id)
            if row.state == "purged":
                return False
            row.result_uid, row.result_file, row.version = result_uid, result_file, version
            row.last_error = None
            row.state = "delivering" if destinations else "done"
            row.finished_at = None if destinations else now
            rows: list[tuple[str, str, str | None]] = [(k, "pending", None) for k in destinations]
            rows += [(key, "skipped", why[:255]) for key, why in (skipped or {}).items()]
            for key, state, why in rows:
                session.add(
                    DeliveryRow(
                        series_id=series_id, destination=key, state=state,
                        next_attempt_at=now, last_error=why,
                    )
                )  # fmt: skip
            return True

    def retry_later(self, series_id: int, error: str, delay_s: float) -> int:
        """Classification failed for now (inference unreachable): wait, then try again."""
        with self._lock, self._sessions.begin() as session:
            row = session.get_one(SeriesRow, series_id)
            if row.state == "purged":  # while it was classified: it stays so
                return row.attempts
            row.state, row.last_error = "receiving", error[:255]
            row.attempts += 1
            row.next_attempt_at = utcnow() + timedelta(seconds=delay_s)
            return row.attempts

    def finish(self, series_id: int, state: str, error: str | None = None) -> None:
        """End a series' work as failed or expired (the caller deletes its files); purged stays."""
        with self._lock, self._sessions.begin() as session:
            row = session.get_one(SeriesRow, series_id)
            if row.state == "purged":
                return
            row.state, row.last_error, row.finished_at = state, (error or "")[:255], utcnow()
            session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.series_id == series_id, DeliveryRow.state == "pending")
                .values(state=state)
            )

    def forget_files(self, series_id: int, *, keep_result: bool = False) -> None:
        with self._lock, self._sessions.begin() as session:
            session.execute(
                update(InstanceRow).where(InstanceRow.series_id == series_id).values(file=None)
            )
            if not keep_result:  # kept for a recall (`dicom_recall_keep_h`)
                session.get_one(SeriesRow, series_id).result_file = None

    # --- delivery ----------------------------------------------------------------------------

    def due_deliveries(self, limit: int = 16) -> list[Due]:
        with self._sessions() as session:
            rows = session.execute(
                select(DeliveryRow, SeriesRow.result_file)
                .join(SeriesRow, SeriesRow.id == DeliveryRow.series_id)
                .where(DeliveryRow.state == "pending", DeliveryRow.next_attempt_at <= utcnow())
                .order_by(DeliveryRow.next_attempt_at)
                .limit(limit)
            ).all()
            return [
                Due(d.id, d.series_id, d.destination, file or "", d.attempts) for d, file in rows
            ]

    def delivered(self, delivery_id: int) -> str | None:
        """Mark one delivery done; the series' end state when it was its last pending one."""
        now = utcnow()
        with self._lock, self._sessions.begin() as session:
            delivery = session.get_one(DeliveryRow, delivery_id)
            delivery.state, delivery.delivered_at, delivery.last_error = "done", now, None
            return self._settle(session, delivery.series_id, now)

    def delivery_rejected(self, delivery_id: int, error: str) -> str | None:
        """The destination refused the result for what it is: the delivery ends `rejected`
        (a person may send it again); the series' end state when nothing else is pending."""
        now = utcnow()
        with self._lock, self._sessions.begin() as session:
            delivery = session.get_one(DeliveryRow, delivery_id)
            delivery.state, delivery.last_error = "rejected", error[:255]
            delivery.attempts += 1
            return self._settle(session, delivery.series_id, now)

    @staticmethod
    def _settle(session: Session, series_id: int, now: datetime) -> str | None:
        """End the series once no delivery is pending: `done`, or `rejected` when a
        destination refused it (the others have it)."""
        session.flush()
        states = set(
            session.scalars(select(DeliveryRow.state).where(DeliveryRow.series_id == series_id))
        )
        if "pending" in states:
            return None
        series = session.get_one(SeriesRow, series_id)
        series.state = "rejected" if "rejected" in states else "done"
        series.finished_at = now
        return series.state

    def delivery_failed(self, delivery_id: int, error: str, delay_s: float) -> None:
        with self._lock, self._sessions.begin() as session:
            delivery = session.get_one(DeliveryRow, delivery_id)
            delivery.attempts += 1
            delivery.last_error = error[:255]
            delivery.next_attempt_at = utcnow() + timedelta(seconds=delay_s)

    def send_now(self, series_id: int) -> None:
        """Make the series' pending deliveries, or a classification waiting to be retried,
        due now (a person saw the destination or inference come back)."""
        now = utcnow()
        with self._lock, self._sessions.begin() as session:
            session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.series_id == series_id)
                .where(DeliveryRow.state.in_(("pending", "rejected")))
                .values(state="pending", next_attempt_at=now)
            )
            session.execute(  # a refused result is tried again: its destination was mended
                update(SeriesRow)
                .where(SeriesRow.id == series_id, SeriesRow.state == "rejected")
                .values(state="delivering", finished_at=None)
            )
            session.execute(
                update(SeriesRow)
                .where(SeriesRow.id == series_id, SeriesRow.state == "receiving")
                .where(SeriesRow.next_attempt_at.is_not(None))
                .values(next_attempt_at=now)
            )

    # --- housekeeping ------------------------------------------------------------------------

    def recover(self) -> int:
        """After a restart: a classification that was cut short is redone, and the quiet
        period of every open series starts again (while the node was down its senders could
        not send the rest: the outage is not quiet)."""
        with self._lock, self._sessions.begin() as session:
            result = session.execute(
                update(SeriesRow).where(SeriesRow.state == "classifying").values(state="receiving")
            )
            session.execute(
                update(SeriesRow)
                .where(SeriesRow.state == "receiving")
                .values(last_instance_at=utcnow())
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def older_than(self, cutoff: datetime) -> list[int]:
        """Pending series created before `cutoff`: past the retention limit."""
        query = select(SeriesRow.id).where(SeriesRow.state.in_(PENDING_STATES))
        with self._sessions() as session:
            return list(session.scalars(query.where(SeriesRow.created_at < cutoff)))

    def rejected_kept(self, cutoff: datetime) -> list[int]:
        """Rejected series created before `cutoff` whose files are still kept for a resend."""
        with self._sessions() as session:
            query = select(SeriesRow.id).where(
                SeriesRow.state == "rejected",
                SeriesRow.created_at < cutoff,
                SeriesRow.result_file.is_not(None),
            )
            return list(session.scalars(query))

    def stats(self) -> Stats:
        with self._sessions() as session:
            depth, oldest = session.execute(
                select(func.count(), func.min(SeriesRow.created_at)).where(
                    SeriesRow.state.in_(PENDING_STATES)
                )
            ).one()
        since = as_utc(oldest)
        age = (utcnow() - since).total_seconds() if since is not None else 0.0
        return Stats(int(depth), max(age, 0.0))

    def files(self) -> set[str]:
        """Every spool file a row still names (the rest are leftovers of a crash)."""
        with self._sessions() as session:
            names = set(
                session.scalars(select(InstanceRow.file).where(InstanceRow.file.is_not(None)))
            )
            results = set(
                session.scalars(
                    select(SeriesRow.result_file).where(SeriesRow.result_file.is_not(None))
                )
            )
        return {n for n in names | results | {maps_file(r) for r in results if r} if n}

    def series(self, series_id: int) -> SeriesRow:
        with self._sessions() as session:
            return session.get_one(SeriesRow, series_id)


def chosen_destinations(row: SeriesRow) -> list[str] | None:
    """The keys of the destinations the series' route chose; None: every destination."""
    return None if row.destinations is None else list(json.loads(row.destinations))


def _latest(session: Session, series_uid: str) -> SeriesRow | None:
    return session.scalars(
        select(SeriesRow)
        .where(SeriesRow.series_uid == series_uid)
        .order_by(SeriesRow.generation.desc())
        .limit(1)
    ).first()


def _known(session: Session, meta: InstanceMeta) -> int | None:
    """The work item that holds the instance already; one that ended unclassified (failed,
    expired) or recalled (its result taken back) does not count: the instance sent again (the
    modality, a retrieval) is new work, classified by the version its route names now."""
    return session.scalar(
        select(InstanceRow.series_id)
        .join(SeriesRow, SeriesRow.id == InstanceRow.series_id)
        .where(
            SeriesRow.series_uid == meta.series_uid,
            InstanceRow.sop_instance_uid == meta.sop_instance_uid,
            SeriesRow.state.not_in((*UNCLASSIFIED_ENDS, "recalled")),
        )
        .limit(1)
    )


def _new_series(
    session: Session,
    meta: InstanceMeta,
    latest: SeriesRow | None,
    state: str,
    model: str | None,
    alias: str | None,
) -> SeriesRow:
    now = utcnow()
    row = SeriesRow(
        study_uid=meta.study_uid, series_uid=meta.series_uid,
        generation=(latest.generation + 1) if latest else 1, state=state,
        calling_ae=meta.calling_ae[:16], model=model, alias=alias, attempts=0,
        created_at=now, last_instance_at=now, finished_at=now if state == "unrouted" else None,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row
