"""Purges at the node: a study sent by mistake (the wrong patient, a patient who declined AI
processing, a study that should never have left the department) forgotten.

A purge (`POST /v1/purges`) is recorded first, naming the study only by its salted hash
(`service.audit.hash_uid`, as audit records do: the UID in clear is kept nowhere); the queue
worker applies it at the start of its next round, because it alone sends, so that nothing of
the study goes out after the purge is applied. It finds the study by hashing the study UIDs
the node holds (a rare, admin-made request: a scan of one column, outside the queue's lock),
then, under the lock, for every work item of the study in any state:
- its instances' files, its result (SR) and maps are deleted from the spool, and its instance
  rows (SOP Instance UIDs) with them;
- its deliveries not yet made (pending, or refused and kept for a resend) end `purged`, never
  sent; a classification in flight finds its series purged when it ends
  (`WorkQueue.classified` answers False) and deletes the result it made;
- withdrawals of a recall still to go end `not_kept`: the result they need is gone;
- the work item ends `purged`. Its row is kept, not deleted: the series views, the metrics
  and a recall's counts rest on the rows, and the deliveries made before the purge are
  there to be told. What identifies the study goes: its study and series UIDs become the
  purge's marker (`purged:<id>`, `purged:<id>:<row>`: unique, as (series_uid, generation)
  must be), and its result's UID is blanked.
Then the scans' outcome rows (`outcome_book.reference_of` of each instance) go, and the exam
reports of their accession numbers that no other scan is left for. Those the training service
may hold (`outcome_book.MAY_BE_HELD`: sent, or perhaps on their way) must leave the version's
figures there too: with outcome reporting on (`apply_new`'s `outcomes`), each is put in line
to be retracted (`outcome_book.purged`: the one thing that goes out after the purge, by the
hash it was sent under), keeping only that hash and the version, with the marker for its
accession number, and is deleted once retracted; without it nothing would send the
retraction, and it is deleted like the others. Orders and retrievals
forget the study: one that names other studies too keeps those, an order that named only
this study is deleted, and a retrieval keeps its row (who asked, when: it was audited) with
the marker for what it asked.

What the node already delivered it cannot take back by deleting its copy: the purge lists,
per destination, how many results went there and when, for a person to remove them there.

Unless asked not to (`block: false`), a purge blocks its study from the moment it is
recorded (`service.dicom_node.purge_blocks`): instances of it sent again (a PACS auto-route,
a retrieval or order still running) are acknowledged and dropped unwritten, counted with the
purge (`dropped`), refused by the write itself where the process has yet to read the block
(`PurgeBlocks.refuse`); retrievals and orders do not fetch it; and a series of it that came in
as the purge was made is purged as it is applied, or by the worker as it claims it (`caught`),
never classified. Released (`POST /v1/purges/{id}/release`: a purge made in error), the
study comes in again as a new arrival; so does a study purged with `block: false`.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.audit import hash_uid
from service.dicom_node import metrics
from service.dicom_node.ledger import iso_time
from service.dicom_node.outcome_book import MAY_BE_HELD, PURGED, OutcomeBook, purged, reference_of
from service.dicom_node.purge_blocks import IN_FORCE, PurgeBlocks
from service.dicom_node.spool import maps_file
from service.dicom_node.tables import (
    DeliveryRow,
    ExamReportRow,
    InstanceRow,
    OrderRow,
    OutcomeRow,
    PurgeRow,
    RetrievalRow,
    SeriesRow,
    WithdrawalRow,
)
from service.jobs.store import as_utc, utcnow
from service.jobs.tables import rowcount

MARK = PURGED  # what stands for the study's UIDs in the rows kept
NOT_SENT = ("pending", "rejected")  # deliveries a purge stops
NOT_CLASSIFIED = ("receiving", "classifying")
WITHDRAWING = ("pending", "rejected")  # a recall's withdrawals that would need the result
CHUNK = 500  # references in one IN (...)


@dataclass
class Counts:
    """What a purge did."""

    series: int = 0  # work items of the study, each now `purged`
    series_stopped: int = 0  # of those, still receiving or classifying: never classified
    deliveries_stopped: int = 0  # results never sent (pending, or refused and kept)
    instances_deleted: int = 0  # instance files deleted from the spool
    results_deleted: int = 0  # results (SR, with their maps) deleted from the spool
    outcomes_deleted: int = 0  # scans' outcome rows deleted: never sent, or retracted already
    outcomes_retracting: int = 0  # those the training service may hold: retracted, then deleted
    exam_reports_deleted: int = 0
    orders_forgotten: int = 0
    retrievals_forgotten: int = 0


class PurgeBook:
    def __init__(self, engine: Engine, lock: threading.Lock, salts: Sequence[str]) -> None:
        """`lock`: the work queue's, held by every change to the queue's rows; `salts`: the
        audit salt, then the one before it while rotating (a purge asked under it is found)."""
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._lock = lock
        self.salts = tuple(salts)
        self.blocks = PurgeBlocks(engine, self.salts)

    def study_hash(self, study_uid: str) -> str:
        """The study as the purge and its audit record name it."""
        return hash_uid(study_uid, self.salts[0])

    def request(self, study_uid: str, reason: str, by: str, block: bool = True) -> int:
        """Record the purge of the study (the worker applies it); its id. With `block`, the
        study is blocked at once in this process (in the others within `REFRESH_S`); a study
        blocked already stays so, by this purge too. Its purges made under the salt before a
        rotation are re-keyed to this salt's hash: one release then ends every block of it."""
        row = PurgeRow(
            study_hash=self.study_hash(study_uid), reason=reason[:255], requested_by=by[:255],
            state="new", created_at=utcnow(), blocked=block, dropped=0,
        )  # fmt: skip
        earlier = {hash_uid(study_uid, salt) for salt in self.salts[1:]} - {row.study_hash}
        rekeyed = 0
        with self._sessions.begin() as session:
            if earlier:
                moved = update(PurgeRow).where(PurgeRow.study_hash.in_(earlier))
                rekeyed = rowcount(session.execute(moved.values(study_hash=row.study_hash)))
            session.add(row)
        if rekeyed:
            self.blocks.refresh()  # the blocks kept under the earlier hash, read anew
        elif block:
            self.blocks.add(row.study_hash, row.id)
        return row.id

    # --- applying (the worker) -----------------------------------------------------------------

    def apply_new(
        self, delete_file: Callable[[str], None], outcomes: OutcomeBook | None = None
    ) -> int:
        """Apply the purges not yet applied, deleting the study's spool files with
        `delete_file` before each commits (`done` means gone; stopped in between, the purge
        is applied again at the next start); how many it applied. `outcomes`: the book whose
        outcomes are reported (None: none are), where the study's are retracted."""
        with self._sessions() as session:
            waiting = session.execute(
                select(PurgeRow.id, PurgeRow.study_hash, IN_FORCE).where(PurgeRow.state == "new")
            ).all()
        for purge_id, study_hash, blocks in sorted(waiting):
            if blocks:  # made in another process: blocked here before it is applied
                self.blocks.add(study_hash, purge_id)
            found = self._find(study_hash)
            files: list[str] = []
            with self._lock, _locked(outcomes), self._sessions.begin() as session:
                # None: looked for again, as an intake's write checked before the purge was
                # made may have committed since (it holds the lock: it is done now).
                study_uid = found or self._find(study_hash)
                purge = session.get_one(PurgeRow, purge_id)
                counts = Counts(**json.loads(purge.counts or "{}"))  # `caught` may have counted
                delivered = (
                    _apply(session, purge.id, study_uid, counts, files, outcomes is not None)
                    if study_uid
                    else []
                )
                purge.counts, purge.delivered = json.dumps(asdict(counts)), json.dumps(delivered)
                purge.state, purge.applied_at = "done", utcnow()
                session.flush()
                for name in files:
                    delete_file(name)
            metrics.PURGES.labels("true" if blocks else "false").inc()
        return len(waiting)

    def _find(self, study_hash: str) -> str | None:
        """The study UID the node holds whose hash is `study_hash`; None: it holds none."""
        with self._sessions() as session:
            for uid in _study_uids(session):
                if any(hash_uid(uid, salt) == study_hash for salt in self.salts):
                    return uid
        return None

    def caught(
        self,
        series: SeriesRow,
        delete_file: Callable[[str], None],
        outcomes: OutcomeBook | None = None,
    ) -> bool:
        """Whether the series, just claimed to be classified, is of a study a purge blocks:
        then its study is purged again, counted with that purge. It came in as the purge was
        made (before the intake's check saw it, or in a process that had yet to learn of it)."""
        purge_id = self.blocks.blocking(series.study_uid)
        if purge_id is None:
            return False
        files: list[str] = []
        with self._lock, _locked(outcomes), self._sessions.begin() as session:
            purge = session.get_one(PurgeRow, purge_id)
            counts = Counts(**json.loads(purge.counts or "{}"))
            _apply(session, purge_id, series.study_uid, counts, files, outcomes is not None)
            purge.counts = json.dumps(asdict(counts))
            session.flush()
            for name in files:
                delete_file(name)
        return True

    def forget_late_outcomes(
        self, series_id: int, sops: Sequence[str], outcomes: OutcomeBook
    ) -> None:
        """Outcome rows kept (in `outcomes`) for a series classified as its study was purged
        (after its result was queued, before its scans were remembered): forgotten too."""
        with self._lock, outcomes.lock, self._sessions.begin() as session:
            series = session.get_one(SeriesRow, series_id)
            if series.state != "purged":
                return
            purge = session.get_one(PurgeRow, int(series.study_uid.removeprefix(MARK)))
            counts = Counts(**json.loads(purge.counts or "{}"))
            _forget_outcomes(session, sops, counts, series.study_uid)
            purge.counts = json.dumps(asdict(counts))

    # --- reading ---------------------------------------------------------------------------------

    def list(self, limit: int = 50, study_uid: str | None = None) -> list[dict[str, Any]]:
        """The newest purges; with `study_uid`, that study's (under each salt's hash)."""
        query = select(PurgeRow).order_by(PurgeRow.id.desc()).limit(limit)
        if study_uid is not None:
            hashes = {hash_uid(study_uid, salt) for salt in self.salts}
            query = query.where(PurgeRow.study_hash.in_(hashes))
        with self._sessions() as session:
            rows = session.scalars(query)
            return [purge_view(row, self.blocks.pending(row.id)) for row in rows]

    def get(self, purge_id: int) -> dict[str, Any] | None:
        with self._sessions() as session:
            row = session.get(PurgeRow, purge_id)
            return purge_view(row, self.blocks.pending(purge_id)) if row is not None else None


def purge_view(row: PurgeRow, pending: tuple[int, datetime | None] = (0, None)) -> dict[str, Any]:
    """What `GET /v1/purges[/{id}]` shows: never the study, in clear or hashed. `pending`:
    the instances this process dropped and has yet to write (`PurgeBlocks.pending`)."""
    dropped_at = max((t for t in (as_utc(row.dropped_at), pending[1]) if t), default=None)
    return {
        "id": row.id,
        "requested_by": row.requested_by,
        "reason": row.reason,
        "state": row.state,
        "created_at": iso_time(row.created_at),
        "applied_at": iso_time(row.applied_at),
        **asdict(Counts(**json.loads(row.counts or "{}"))),
        "delivered": json.loads(row.delivered or "[]"),
        "blocked": row.blocked and row.released_at is None,
        "released_at": iso_time(row.released_at),
        "released_by": row.released_by,
        "released_reason": row.released_reason,
        "dropped_after": {"count": row.dropped + pending[0], "last_at": iso_time(dropped_at)},
    }


def _study_uids(session: Session) -> Iterator[str]:
    """Every study UID the node holds: its work items', its retrievals' and orders'."""
    yield from session.scalars(
        select(SeriesRow.study_uid).where(~SeriesRow.study_uid.startswith(MARK)).distinct()
    )
    asked = select(RetrievalRow.study_uid).where(RetrievalRow.study_uid.is_not(None))
    yield from (uid for uid in session.scalars(asked.distinct()) if uid)
    for column in (RetrievalRow.studies, OrderRow.studies):
        for found in session.scalars(select(column).where(column.is_not(None))):
            yield from json.loads(found or "[]")


def _apply(
    session: Session,
    purge_id: int,
    study_uid: str,
    counts: Counts,
    files: list[str],
    retract: bool,
) -> list[dict[str, Any]]:
    """Purge what the node holds of the study (counted in `counts`, the spool files to delete
    added to `files`; its outcomes the training service may hold put in line to be retracted
    there if `retract`); the deliveries made before, by destination."""
    now, marker = utcnow(), f"{MARK}{purge_id}"
    sent: dict[str, list[datetime]] = defaultdict(list)
    sops: list[str] = []
    for series in session.scalars(select(SeriesRow).where(SeriesRow.study_uid == study_uid)):
        counts.series += 1
        counts.series_stopped += series.state in NOT_CLASSIFIED
        for sop, file in session.execute(
            select(InstanceRow.sop_instance_uid, InstanceRow.file)
            .where(InstanceRow.series_id == series.id)
        ).all():  # fmt: skip
            sops.append(sop)
            if file:
                files.append(file)
                counts.instances_deleted += 1
        session.execute(delete(InstanceRow).where(InstanceRow.series_id == series.id))
        if series.result_file:
            files += [series.result_file, maps_file(series.result_file)]
            counts.results_deleted += 1
        _stop_deliveries(session, series.id, counts, sent)
        session.execute(
            update(WithdrawalRow)
            .where(WithdrawalRow.series_id == series.id, WithdrawalRow.state.in_(WITHDRAWING))
            .values(state="not_kept", last_error=f"the study was purged (purge {purge_id})")
        )
        series.study_uid, series.series_uid = marker, f"{marker}:{series.id}"
        series.result_uid = series.result_file = series.next_attempt_at = None
        series.state, series.finished_at = "purged", series.finished_at or now
    _forget_outcomes(session, sops, counts, marker if retract else None)
    _forget_orders(session, study_uid, counts)
    _forget_retrievals(session, study_uid, marker, counts)
    return [
        {"destination": key, "results": len(times), "first_at": iso_time(min(times)),
         "last_at": iso_time(max(times))}
        for key, times in sorted(sent.items())
    ]  # fmt: skip


def _stop_deliveries(
    session: Session, series_id: int, counts: Counts, sent: dict[str, list[datetime]]
) -> None:
    """The series' deliveries not made end `purged`; those made are noted in `sent`."""
    for delivery in session.scalars(select(DeliveryRow).where(DeliveryRow.series_id == series_id)):
        if delivery.state in NOT_SENT:
            delivery.state = "purged"
            counts.deliveries_stopped += 1
        elif delivery.state == "done":
            sent[delivery.destination].append(delivery.delivered_at or delivery.next_attempt_at)


def _forget_outcomes(
    session: Session, sops: Sequence[str], counts: Counts, marker: str | None
) -> None:
    """Forget the scans' outcome rows: with `marker` (outcomes reported), those the training
    service may hold are put in line to be retracted there, the others deleted; and delete
    the exam reports of their accession numbers that no other scan here is left for."""
    references = [reference_of(sop) for sop in sops]
    accessions: set[str] = set()
    now = utcnow()
    for start in range(0, len(references), CHUNK):
        chosen = OutcomeRow.reference.in_(references[start : start + CHUNK])
        for row in session.scalars(select(OutcomeRow).where(chosen)):
            accessions.add(row.accession)
            if marker is not None and row.state in MAY_BE_HELD:
                purged(row, marker, now)
                counts.outcomes_retracting += 1
            else:
                session.delete(row)
                counts.outcomes_deleted += 1
    for accession in sorted(accessions):
        left = session.scalar(select(func.count()).where(OutcomeRow.accession == accession))
        if not left:
            gone = session.execute(
                delete(ExamReportRow).where(ExamReportRow.accession == accession)
            )
            counts.exam_reports_deleted += int(gone.rowcount or 0)  # type: ignore[attr-defined]


def _locked(outcomes: OutcomeBook | None) -> AbstractContextManager[Any]:
    """The outcome book's lock, or nothing without one: held while the purge changes the
    outcome rows, so that the outcome reporter cannot mark one sent meanwhile (answering a
    send it made before the purge): one put in line to be retracted stays in line."""
    return outcomes.lock if outcomes is not None else nullcontext()


def _forget_orders(session: Session, study_uid: str, counts: Counts) -> None:
    """An order that fetched the study forgets it; one that fetched only it is deleted (its
    accession number is the patient's exam)."""
    named = OrderRow.studies.contains(json.dumps(study_uid), autoescape=True)
    for order in session.scalars(select(OrderRow).where(named)):
        others = [uid for uid in json.loads(order.studies or "[]") if uid != study_uid]
        if others:
            order.studies = json.dumps(others)
        else:
            session.delete(order)
        counts.orders_forgotten += 1


def _forget_retrievals(session: Session, study_uid: str, marker: str, counts: Counts) -> None:
    """A retrieval that asked for the study, or found it, forgets it: the marker stands for
    what it asked (the study and series, or an accession number that found only it)."""
    named = (RetrievalRow.study_uid == study_uid) | RetrievalRow.studies.contains(
        json.dumps(study_uid), autoescape=True
    )
    for row in session.scalars(select(RetrievalRow).where(named)):
        found = None if row.studies is None else json.loads(row.studies)
        if found is not None:
            found = [uid for uid in found if uid != study_uid]
            row.studies = json.dumps(found)
        if row.study_uid == study_uid:
            row.study_uid = marker
            row.series_uid = marker if row.series_uid else None
        elif row.accession and found == []:
            row.accession = marker
        counts.retrievals_forgotten += 1
