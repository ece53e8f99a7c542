"""Scans waiting for the RIS's final report of their exam, kept in the job store's database
(table `dicom_outcomes`), and the confirmed outcomes on their way to the training service.

A scan is remembered when the node classifies it with a model whose outcomes the site
reports: its exam's accession number, the version, what the version answered, and a
reference that names nobody (a hash of its SOP Instance UID, the same each time, so a
correction replaces the first report at the training service). A final report labels every
scan of its exam by that model and puts it in line to be sent; a correction that changes the
class labels them again and sends them again; one that confirms no class of the model (the
finding struck, two classes named) withdraws the label, and the report already sent is
retracted at the training service. The exam's newest final report is kept too
(table `dicom_exam_reports`, its codes only): a scan of the exam classified after it came (the
RIS reported before the PACS sent the study, a series came late) is labelled by it.
Everything is deleted `wait` after the scan was classified or the report came.

A purged study's scans (`service.dicom_node.purges`) the training service may hold are put in
line to be retracted there (`purged`), keeping only what the retraction needs, and deleted
once it is done.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.dicom_node.ledger import iso_time
from service.dicom_node.tables import ExamReportRow, OutcomeRow
from service.jobs.store import utcnow
from service.paging import newest_page

BATCH = 1000  # what one request to the training service takes at most
IN_LINE = ("pending", "retracting")  # to be sent: an outcome, or the retraction of one
# What the training service may hold (by the reference): what was sent; one pending may have
# been sent before it was relabelled, or be on its way; a refusal may be of a relabelled one,
# or of a retraction. Never `waiting` (not labelled yet) nor `retracted`.
MAY_BE_HELD = ("pending", "sent", "refused", "retracting")
PURGED = "purged:"  # a purge's marker (`purges.MARK`): the accession of its scans retracting


def reference_of(sop_instance_uid: str) -> str:
    """The scan's reference: a hash of its SOP Instance UID (the UID never leaves the node)."""
    return "sop-" + hashlib.sha256(sop_instance_uid.encode()).hexdigest()


@dataclass(frozen=True)
class Batch:
    """Outcomes of one version due to be sent (`state` pending: the body's `outcomes`) or
    retracted (`retracting`: `{"reference"}` each): row ids, and what goes."""

    model: str
    version: int
    state: str
    ids: list[int]
    outcomes: list[dict[str, Any]]
    attempts: int

    @property
    def retracts(self) -> bool:
        return self.state == "retracting"


class OutcomeBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.lock = threading.Lock()  # held by every change (a purge's too: `purges`)

    def remember(
        self,
        accession: str,
        model: str,
        version: int,
        scans: Sequence[tuple[str, dict[str, float], str | None]],
    ) -> None:
        """Keep each scan (SOP Instance UID, probabilities, their signature) of `accession`
        classified by the version; a scan classified again by it keeps its newest answer
        (and any label)."""
        now, references = utcnow(), [reference_of(sop) for sop, _, _ in scans]
        with self.lock, self._sessions.begin() as session:
            kept = {
                row.reference: row
                for row in session.scalars(
                    select(OutcomeRow).where(
                        OutcomeRow.model == model,
                        OutcomeRow.version == version,
                        OutcomeRow.reference.in_(references),
                    )
                )
            }  # one query for the series, not one a scan
            for reference, (_, probabilities, signature) in zip(references, scans, strict=True):
                row = kept.get(reference)
                answered = json.dumps(probabilities)
                if row is None:
                    session.add(OutcomeRow(
                        accession=accession, model=model, version=version, reference=reference,
                        probabilities=answered, signature=signature, state="waiting",
                        attempts=0, created_at=now,
                    ))  # fmt: skip
                    continue
                if row.label is not None and row.probabilities != answered:
                    row.state, row.next_attempt_at = "pending", now  # the new answer, labelled
                row.accession, row.probabilities = accession, answered
                row.signature = signature

    def label(
        self, accession: str, label_for: Callable[[str, list[str]], str | None]
    ) -> tuple[int, int]:
        """Label the scans of `accession` with what the exam's newest final report confirms
        for their model, `label_for(model, classes)`; how many it labelled, and how many lost
        a label. Those not yet labelled so are put in line (one already sent with that label
        is not sent again); a labelled scan whose model the report confirms nothing of (None)
        loses its label, and what was sent of it is put in line to be retracted."""
        now, labelled, withdrawn = utcnow(), 0, 0
        with self.lock, self._sessions.begin() as session:
            rows = session.scalars(
                select(OutcomeRow).where(OutcomeRow.accession == accession)
            ).all()
            for row in rows:
                label = label_for(row.model, list(json.loads(row.probabilities)))
                if label is None:
                    if row.label is not None:  # sent or not, a retraction is safe to send
                        withdrawn += 1
                        _due(row, now, label=None, state="retracting")
                    continue
                labelled += 1
                if row.label == label and row.state != "waiting":
                    continue
                _due(row, now, label=label, state="pending")
        return labelled, withdrawn

    def keep_report(self, accession: str, codes: frozenset[str]) -> None:
        """Keep the exam's newest final report (its codes), for its scans classified later."""
        now, named = utcnow(), json.dumps(sorted(codes))
        with self.lock, self._sessions.begin() as session:
            row = session.scalar(select(ExamReportRow).where(ExamReportRow.accession == accession))
            if row is None:
                session.add(ExamReportRow(accession=accession, codes=named, received_at=now))
            else:
                row.codes, row.received_at = named, now

    def drop_report(self, accession: str) -> None:
        """Forget the exam's kept report: a newer one names no class followed."""
        with self.lock, self._sessions.begin() as session:
            session.execute(delete(ExamReportRow).where(ExamReportRow.accession == accession))

    def report_codes(self, accession: str) -> frozenset[str] | None:
        """The codes of the exam's newest final report; None: none came (or it was forgotten)."""
        with self._sessions() as session:
            codes = session.scalar(
                select(ExamReportRow.codes).where(ExamReportRow.accession == accession)
            )
        return None if codes is None else frozenset(json.loads(codes))

    def known(self, accession: str) -> bool:
        """Whether any scan of `accession` is waiting here."""
        with self._sessions() as session:
            found = session.scalar(
                select(OutcomeRow.id).where(OutcomeRow.accession == accession).limit(1)
            )
            return found is not None

    def due(self) -> list[Batch]:
        """Labelled outcomes due to be sent, and withdrawn ones due to be retracted, by
        version, at most BATCH a request."""
        with self._sessions() as session:
            rows = session.scalars(
                select(OutcomeRow)
                .where(OutcomeRow.state.in_(IN_LINE), OutcomeRow.next_attempt_at <= utcnow())
                .order_by(OutcomeRow.model, OutcomeRow.version, OutcomeRow.state, OutcomeRow.id)
                .limit(BATCH * 4)
            ).all()
        batches: dict[tuple[str, int, str], Batch] = {}
        for row in rows:
            batch = batches.setdefault(
                (row.model, row.version, row.state),
                Batch(row.model, row.version, row.state, [], [], row.attempts),
            )
            if len(batch.ids) < BATCH:
                batch.ids.append(row.id)
                batch.outcomes.append(_sent(row))
        return list(batches.values())

    def sent(self, batch: Batch) -> None:
        """Sent, or retracted; a purged study's scan retracted is deleted (`_update`)."""
        done = "retracted" if batch.retracts else "sent"
        self._update(batch, lambda row: setattr(row, "state", done))

    def refused(self, batch: Batch, error: str) -> None:
        """The training service refused them (a 4xx): kept, not sent again unless relabelled."""
        self._update(batch, lambda row: _set(row, state="refused", last_error=error[:255]))

    def later(self, batch: Batch, error: str, delay_s: float) -> None:
        when = utcnow() + timedelta(seconds=delay_s)
        self._update(
            batch,
            lambda row: _set(row, attempts=row.attempts + 1, last_error=error[:255],
                             next_attempt_at=when),
        )  # fmt: skip

    def forget_before(self, cutoff: datetime) -> int:
        """Delete what was classified before `cutoff` (its report did not come in time, or it
        was sent long ago), the reports that came before it, and those of the exams whose
        scans go with it: kept on, such a report would count as `held`, waiting for scans
        that came and went, and tip the unmatched-reports alert. How many rows were still
        pending (not sent)."""
        with self.lock, self._sessions.begin() as session:
            old = OutcomeRow.created_at < cutoff
            pending = session.scalars(
                select(OutcomeRow.id).where(old, OutcomeRow.state.in_(IN_LINE))
            ).all()
            exam = ExamReportRow.accession
            scans_gone = exam.in_(select(OutcomeRow.accession).where(old))
            scans_kept = exam.in_(select(OutcomeRow.accession).where(~old))
            gone = (ExamReportRow.received_at < cutoff) | (scans_gone & ~scans_kept)
            session.execute(delete(ExamReportRow).where(gone))  # before its scans: it asks them
            session.execute(delete(OutcomeRow).where(old))
            return len(pending)

    def page(
        self, state: str | None, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The scans kept, newest first, optionally in one state: for the operator who asks
        "did the report of exam X reach the training service, and if not, why?"."""
        query = select(OutcomeRow)
        if state is not None:
            query = query.where(OutcomeRow.state == state)
        with Session(self.engine) as session:
            rows, next_cursor = newest_page(
                session, query, OutcomeRow.id, "outcome-reports", cursor, limit
            )
            return [_view(row) for row in rows], next_cursor

    def report_matches(self, settled_before: datetime) -> tuple[int, int]:
        """Of the exams' kept reports that came before `settled_before` (time enough for
        their scans), how many are still held (no scan of the exam here) and how many
        matched: most held says the RIS's accession numbers are not the scans'."""
        scans = _scans_of_exam()
        settled = ExamReportRow.received_at < settled_before
        with Session(self.engine) as session:
            held = session.scalar(select(func.count()).where(settled, scans == 0))
            total = session.scalar(select(func.count()).select_from(ExamReportRow).where(settled))
        return int(held or 0), int(total or 0) - int(held or 0)

    def exam_page(
        self, held: bool | None, cursor: str | None, limit: int
    ) -> tuple[list[tuple[ExamReportRow, int]], str | None]:
        """The exams' kept reports, newest first, each with how many scans of the exam the
        node follows (none: `held`, waiting for them); only the held, or only the others."""
        scans = _scans_of_exam()
        query = select(ExamReportRow)
        if held is not None:
            query = query.where((scans == 0) if held else (scans > 0))
        with Session(self.engine) as session:
            rows, next_cursor = newest_page(
                session, query, ExamReportRow.id, "exam-reports", cursor, limit
            )
            counted = dict(
                session.execute(
                    select(OutcomeRow.accession, func.count(OutcomeRow.id))
                    .where(OutcomeRow.accession.in_([r.accession for r in rows]))
                    .group_by(OutcomeRow.accession)
                ).all()
            )
        return [(row, int(counted.get(row.accession, 0))) for row in rows], next_cursor

    def _update(self, batch: Batch, change: Callable[[OutcomeRow], None]) -> None:
        """`change` each row of `batch` still as it was sent: one relabelled, withdrawn,
        classified again or purged meanwhile is left in line, to go with what it says now. A
        purged study's scan once retracted is deleted: it was kept for that alone."""
        sent = dict(zip(batch.ids, batch.outcomes, strict=True))
        with self.lock, self._sessions.begin() as session:
            for row in session.scalars(select(OutcomeRow).where(OutcomeRow.id.in_(batch.ids))):
                if row.state == batch.state and _sent(row) == sent[row.id]:
                    change(row)
                    if row.state == "retracted" and row.accession.startswith(PURGED):
                        session.delete(row)


def _view(row: OutcomeRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "accession_number": row.accession,
        "model": row.model,
        "version": row.version,
        "state": row.state,
        "label": row.label,
        "signed": row.signature is not None,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "classified_at": iso_time(row.created_at),
        "reported_at": iso_time(row.reported_at),
        "next_attempt_at": iso_time(row.next_attempt_at) if row.state in IN_LINE else None,
    }


def _scans_of_exam() -> Any:
    """How many scans of a kept report's exam the node follows (a correlated subquery)."""
    return (
        select(func.count(OutcomeRow.id))
        .where(OutcomeRow.accession == ExamReportRow.accession)
        .scalar_subquery()
    )


def _sent(row: OutcomeRow) -> dict[str, Any]:
    """What goes of the row: its outcome, or (retracting) its reference alone."""
    if row.state == "retracting":
        return {"reference": row.reference}
    sent = {"reference": row.reference, "label": row.label,
            "probabilities": json.loads(row.probabilities)}  # fmt: skip
    if row.signature:
        sent["signature"] = row.signature
    return sent


def purged(row: OutcomeRow, marker: str, now: datetime) -> None:
    """Put a purged study's scan in line to be retracted at the training service (`marker`,
    the purge's, for its accession number: deleted once retracted), keeping nothing of it but
    what the retraction needs: the reference (a hash), the version, and when it was classified
    (the outcome wait deletes it should the retraction never be done)."""
    _due(row, now, label=None, state="retracting")
    row.accession, row.probabilities, row.signature = marker, "{}", None


def _due(row: OutcomeRow, now: datetime, **values: Any) -> None:
    """Put the row in line, at once, with `values` (its label and state)."""
    _set(row, **values, reported_at=now, attempts=0, next_attempt_at=now, last_error=None)


def _set(row: OutcomeRow, **values: Any) -> None:
    for name, value in values.items():
        setattr(row, name, value)
