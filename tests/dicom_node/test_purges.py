"""Purges in the work queue, on SQLite and the real PostgreSQL: what a purge stops, deletes and
forgets of a study (its work items in every state, their outcomes and exam reports, the
orders and retrievals that name it), what it keeps of the others, the deliveries it lists as
made before it, the race with a classification, and a study sent again after one that blocks
nothing (`test_purge_blocks`: one that blocks). Outcomes
the training service may hold are put in line to be retracted there, with nothing left of
them but their reference, and deleted once retracted (with outcome reporting on)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from service.audit import hash_uid
from service.dicom_node.order_book import OrderBook
from service.dicom_node.outcome_book import Batch, OutcomeBook, reference_of
from service.dicom_node.purges import PurgeBook
from service.dicom_node.queue import InstanceMeta, WorkQueue
from service.dicom_node.recalls import RecallBook
from service.dicom_node.tables import (
    DeliveryRow,
    ExamReportRow,
    OrderRow,
    OutcomeRow,
    RetrievalRow,
    SeriesRow,
    WithdrawalRow,
)
from service.jobs.store import utcnow
from service.jobs.tables import Base

STUDY, OTHER = "1.2.826.7.1", "1.2.826.7.2"
PACS, RIS = "PACS@h:104", "mllp://ris:2575/RIS"
SALT = "salt-of-the-tests"
P = {"normal": 0.25, "pneumonia": 0.75}


@pytest.fixture
def queue(engine: Engine) -> WorkQueue:
    return WorkQueue(engine)


@pytest.fixture
def book(queue: WorkQueue) -> PurgeBook:
    return PurgeBook(queue.engine, queue.lock, [SALT])


def meta(series: int, sop: int, study: str = STUDY) -> InstanceMeta:
    uid = f"{study}.{series}"
    return InstanceMeta(study, uid, f"{uid}.{sop}", "1.2.840.10008.5.1.4.1.1.1", "CR", "", "MOD")


def received(queue: WorkQueue, series: int, count: int = 1, study: str = STUDY) -> int:
    """A series of `count` instances (files `<series>-<n>.dcm`), still receiving."""
    for sop in range(1, count + 1):
        _, series_id = queue.add_instance(
            meta(series, sop, study), "chest-xray", None, f"{series}-{sop}.dcm"
        )
    return series_id


def quiet(queue: WorkQueue) -> None:
    with queue.engine.begin() as conn:
        conn.execute(update(SeriesRow).values(last_instance_at=utcnow() - timedelta(minutes=1)))


def classified(queue: WorkQueue, series: int, study: str = STUDY) -> int:
    """A series classified (version 3): its result `<series>.sr.dcm` due to the PACS and RIS."""
    series_id = received(queue, series, study=study)
    assert queue.classified(series_id, f"2.25.{series}", f"{series}.sr.dcm", [PACS, RIS], None, 3)
    return series_id


def deliveries(queue: WorkQueue, series_id: int) -> dict[str, str]:
    with queue.engine.connect() as conn:
        rows = conn.execute(
            select(DeliveryRow.destination, DeliveryRow.state).where(
                DeliveryRow.series_id == series_id
            )
        )
        return {destination: state for destination, state in rows}


def deleted(book: PurgeBook, outcomes: OutcomeBook | None = None) -> list[str]:
    """Apply the new purges as the worker does; the spool files they deleted."""
    files: list[str] = []
    book.apply_new(files.append, outcomes)
    return files


def naming(engine: Engine, *values: str) -> list[str]:
    """Every row of every table that holds one of `values` in any column."""
    found = []
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                if any(v in str(cell) for cell in row for v in values):
                    found.append(f"{table.name}: {tuple(row)}")
    return found


def test_a_purge_stops_deletes_and_forgets_every_work_item_of_the_study_and_nothing_else(
    queue: WorkQueue, book: PurgeBook
) -> None:
    waiting = received(queue, 1, count=2)
    in_flight = received(queue, 2)
    quiet(queue)
    claimed = {queue.claim_quiet(1).id, queue.claim_quiet(1).id}  # type: ignore[union-attr]
    assert claimed == {waiting, in_flight}
    queue.retry_later(waiting, "inference unreachable", 60)  # waiting for its retry
    half = classified(queue, 3)  # the PACS has its result, the RIS not yet (down)
    pacs = next(d for d in queue.due_deliveries() if d.series_id == half and d.destination == PACS)
    queue.delivered(pacs.delivery_id)
    queue.forget_files(half, keep_result=True)  # instances deleted as they go; result kept
    refused = classified(queue, 4)  # the RIS refused it for what it is, the PACS has it
    for due in queue.due_deliveries():
        if due.series_id == refused and due.destination == PACS:
            queue.delivered(due.delivery_id)
        elif due.series_id == refused:
            queue.delivery_rejected(due.delivery_id, "HL7 ACK CR")
    assert queue.series(refused).state == "rejected"
    other = received(queue, 8, study=OTHER)
    other_done = classified(queue, 9, study=OTHER)

    purge_id = book.request(STUDY, "the wrong patient", "safety-officer")
    view = book.get(purge_id)
    assert view is not None and (view["state"], view["applied_at"], view["series"]) == (
        "new", None, 0,
    )  # fmt: skip
    assert STUDY not in json.dumps(view) and hash_uid(STUDY, SALT) not in json.dumps(view)
    files = deleted(book)
    assert sorted(files) == sorted(
        ["1-1.dcm", "1-2.dcm", "2-1.dcm", "3.sr.dcm", "3.maps.zip", "4-1.dcm", "4.sr.dcm",
         "4.maps.zip"]
    )  # fmt: skip
    assert deleted(book) == []  # applied once
    view = book.get(purge_id)
    assert view is not None and view["state"] == "done" and view["applied_at"] is not None
    counts = {k: v for k, v in view.items() if type(v) is int and k != "id"}  # not `blocked`
    assert counts == {
        "series": 4, "series_stopped": 2, "deliveries_stopped": 2, "instances_deleted": 4,
        "results_deleted": 2, "outcomes_deleted": 0, "outcomes_retracting": 0,
        "exam_reports_deleted": 0, "orders_forgotten": 0, "retrievals_forgotten": 0,
    }  # fmt: skip
    [sent] = view["delivered"]  # the PACS has two results of the study: a person must act
    assert (sent["destination"], sent["results"]) == (PACS, 2)
    assert sent["first_at"] <= sent["last_at"]
    for series_id in (waiting, in_flight, half, refused):
        row = queue.series(series_id)
        assert (row.state, row.study_uid, row.result_uid) == ("purged", f"purged:{purge_id}", None)
        assert row.series_uid == f"purged:{purge_id}:{series_id}" and queue.instances(row.id) == []
    assert deliveries(queue, half) == {PACS: "done", RIS: "purged"}
    assert deliveries(queue, refused) == {PACS: "done", RIS: "purged"}
    assert {d.series_id for d in queue.due_deliveries()} == {other_done}  # nothing of it goes
    queue.send_now(refused)  # "send now" has nothing of it to send either
    assert {d.series_id for d in queue.due_deliveries()} == {other_done}
    assert queue.stats().depth == 2  # the other study's
    assert [i.file for i in queue.instances(other)] == ["8-1.dcm"]
    assert queue.files() == {"8-1.dcm", "9-1.dcm", "9.sr.dcm", "9.maps.zip"}
    assert naming(queue.engine, STUDY) == []
    assert book.list()[0]["id"] == purge_id


def test_a_classification_that_ends_after_the_purge_queues_nothing_and_stays_purged(
    queue: WorkQueue, book: PurgeBook
) -> None:
    """The worker applied the purge while the series was being classified: the result is
    refused (the worker deletes it), a failure or a retry does not bring the series back, and
    the outcomes kept for it as the purge came are deleted."""
    outcomes = OutcomeBook(queue.engine)
    series_id = received(queue, 1)
    quiet(queue)
    assert queue.claim_quiet(1) is not None
    purge_id = book.request(STUDY, "declined AI processing", "ops")
    assert deleted(book) == ["1-1.dcm"]
    assert not queue.classified(series_id, "2.25.1", "1.sr.dcm", [PACS], None, 3)
    assert queue.retry_later(series_id, "inference unreachable", 60) == 0
    queue.finish(series_id, "failed", "inference answered 404")
    row = queue.series(series_id)
    assert (row.state, row.result_file, row.last_error) == ("purged", None, None)
    assert queue.due_deliveries() == [] and queue.files() == set()
    view = book.get(purge_id)
    assert view is not None and (view["series_stopped"], view["delivered"]) == (1, [])

    outcomes.remember("ACC-1", "chest-xray", 3, [(f"{STUDY}.1.1", P, None)])  # just too late
    book.forget_late_outcomes(series_id, [f"{STUDY}.1.1"], outcomes)
    assert not outcomes.known("ACC-1")
    view = book.get(purge_id)
    assert view is not None and view["outcomes_deleted"] == 1
    kept = received(queue, 2, study=OTHER)
    outcomes.remember("ACC-2", "chest-xray", 3, [(f"{OTHER}.2.1", P, None)])
    book.forget_late_outcomes(kept, [f"{OTHER}.2.1"], outcomes)  # not purged: kept
    assert outcomes.known("ACC-2")


def test_the_study_s_outcomes_and_the_exam_reports_only_it_had_go(
    queue: WorkQueue, book: PurgeBook
) -> None:
    """ACC-1 is the study's exam alone; ACC-2 has a series of the study and one of another
    (the same accession number on two studies): its report stays, for the other. ACC-1's
    scan, sent, is put in line to be retracted at the training service, with nothing of it
    left but its reference, and deleted once retracted; ACC-2's, never sent, goes at once."""
    outcomes = OutcomeBook(queue.engine)
    classified(queue, 1)
    classified(queue, 2)
    classified(queue, 3, study=OTHER)
    outcomes.remember("ACC-1", "chest-xray", 3, [(f"{STUDY}.1.1", P, "signed-by-inference")])
    outcomes.remember("ACC-2", "chest-xray", 3, [(f"{STUDY}.2.1", P, None)])
    outcomes.remember("ACC-2", "chest-xray", 3, [(f"{OTHER}.3.1", P, None)])
    for accession in ("ACC-1", "ACC-2"):
        outcomes.keep_report(accession, frozenset({"RID5350"}))
    outcomes.label("ACC-1", lambda model, classes: "pneumonia")
    [batch] = outcomes.due()
    outcomes.sent(batch)  # ACC-1's scan is at the training service (by a hash)

    purge_id = book.request(STUDY, "sent by mistake", "ops")
    deleted(book, outcomes)
    view = book.get(purge_id)
    assert view is not None
    counted = ("outcomes_deleted", "outcomes_retracting", "exam_reports_deleted")
    assert [view[k] for k in counted] == [1, 1, 1]
    with queue.engine.connect() as conn:
        [retracting] = conn.execute(
            select(OutcomeRow).where(OutcomeRow.reference == reference_of(f"{STUDY}.1.1"))
        ).all()
        reports = conn.scalars(select(ExamReportRow.accession)).all()
    assert reports == ["ACC-2"]
    assert (retracting.state, retracting.accession, retracting.label) == (
        "retracting", f"purged:{purge_id}", None,
    )  # fmt: skip
    assert (retracting.probabilities, retracting.signature) == ("{}", None)
    assert (retracting.model, retracting.version, retracting.attempts) == ("chest-xray", 3, 0)
    [retraction] = outcomes.due()  # what the outcome reporter sends: the reference alone
    assert (retraction.retracts, retraction.version) == (True, 3)
    assert retraction.outcomes == [{"reference": reference_of(f"{STUDY}.1.1")}]
    outcomes.sent(retraction)  # retracted there: deleted here
    assert outcome_rows(queue.engine) == [("ACC-2", reference_of(f"{OTHER}.3.1"), "waiting")]
    assert outcomes.due() == [] and naming(queue.engine, STUDY, "ACC-1") == []


def outcome_rows(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(OutcomeRow.accession, OutcomeRow.reference, OutcomeRow.state)
            .order_by(OutcomeRow.id)
        )  # fmt: skip
        return [(accession, reference, state) for accession, reference, state in rows]


def outcome_in(outcomes: OutcomeBook, series: int, state: str) -> Batch | None:
    """The study's scan of series `series` (exam ACC-<series>), its outcome brought to `state`
    as the outcome reporter would: `pending` is relabelled after it was sent; `in_flight` is
    pending and on its way (with any other pending): its batch, not yet answered."""
    accession, sop = f"ACC-{series}", f"{STUDY}.{series}.1"
    outcomes.remember(accession, "chest-xray", 3, [(sop, P, None)])
    if state == "waiting":
        return None
    outcomes.label(accession, lambda model, classes: "pneumonia")
    [batch] = [b for b in outcomes.due() if not b.retracts]
    if state == "in_flight":
        return batch
    if state == "refused":
        outcomes.refused(batch, "training service answered 422")
        return None
    outcomes.sent(batch)
    if state == "pending":
        outcomes.label(accession, lambda model, classes: "normal")  # a correction
    elif state in ("retracting", "retracted"):
        outcomes.label(accession, lambda model, classes: None)  # the finding struck
    if state == "retracted":
        [retraction] = [b for b in outcomes.due() if b.retracts]
        outcomes.sent(retraction)
    return None


STATES = ("retracted", "retracting", "refused", "sent", "pending", "in_flight", "waiting")


@pytest.mark.parametrize("reported", [True, False], ids=["outcomes-reported", "not-reported"])
def test_outcomes_the_training_service_may_hold_are_retracted_the_others_deleted(
    queue: WorkQueue, book: PurgeBook, reported: bool
) -> None:
    """Every state: never sent (waiting) or retracted already, deleted; sent, refused (of a
    relabelled one, or of a retraction), retracting, pending (relabelled after it was sent)
    or on its way as the purge came (its answer then marks nothing sent): retracted, in one
    request. Without outcome reporting nothing would send a retraction: all deleted."""
    outcomes = OutcomeBook(queue.engine)
    [*_, in_flight, _] = [outcome_in(outcomes, n, state) for n, state in enumerate(STATES, 1)]
    for n in range(1, len(STATES) + 1):
        classified(queue, n)
    purge_id = book.request(STUDY, "declined AI processing", "ops")
    deleted(book, outcomes if reported else None)
    view = book.get(purge_id)
    assert view is not None
    if not reported:
        assert (view["outcomes_deleted"], view["outcomes_retracting"]) == (len(STATES), 0)
        assert outcome_rows(queue.engine) == []
        return
    assert (view["outcomes_deleted"], view["outcomes_retracting"]) == (2, 5)
    assert in_flight is not None
    outcomes.sent(in_flight)  # the training service took it before the purge: retracted next
    held = ("pending", "in_flight", "sent", "refused", "retracting")
    marker = f"purged:{purge_id}"
    expected = [
        (marker, reference_of(f"{STUDY}.{STATES.index(state) + 1}.1"), "retracting")
        for state in held
    ]
    assert sorted(outcome_rows(queue.engine)) == sorted(expected)
    [retraction] = outcomes.due()
    assert retraction.retracts and len(retraction.outcomes) == len(held)
    outcomes.sent(retraction)
    assert outcome_rows(queue.engine) == []


def test_orders_and_retrievals_forget_the_study_and_keep_the_other_studies(
    queue: WorkQueue, book: PurgeBook
) -> None:
    """Nothing of the study reached the queue: it is found where orders and retrievals name
    it. An order of an accession with two studies keeps the other."""
    orders = OrderBook(queue.engine)
    for accession, studies in (("ACC-1", [STUDY]), ("ACC-2", [STUDY, OTHER]), ("ACC-3", [OTHER])):
        orders.take(accession)
        [due] = orders.due()
        orders.fetched(due.id, studies)
    now = utcnow()
    asked: list[dict[str, Any]] = [
        {"study_uid": STUDY, "series_uid": f"{STUDY}.1", "studies": [STUDY]},
        {"accession": "ACC-1", "studies": [STUDY]},
        {"accession": "ACC-2", "studies": [STUDY, OTHER]},
        {"study_uid": OTHER, "studies": [OTHER]},
        {"study_uid": STUDY},  # still running: it found nothing yet
    ]
    with queue.engine.begin() as conn:
        for values in asked:
            found = values.pop("studies", None)
            conn.execute(
                RetrievalRow.__table__.insert().values(
                    source="pacs", client="ops", state="done", created_at=now, completed=0,
                    failed=0, warning=0, studies=None if found is None else json.dumps(found),
                    **values,
                )
            )  # fmt: skip

    purge_id = book.request(STUDY, "the wrong patient", "ops")
    assert deleted(book) == []
    view = book.get(purge_id)
    assert view is not None and (view["orders_forgotten"], view["retrievals_forgotten"]) == (2, 4)
    with queue.engine.connect() as conn:
        kept = conn.execute(select(OrderRow.accession, OrderRow.studies).order_by(OrderRow.id))
        assert [(a, json.loads(s)) for a, s in kept] == [("ACC-2", [OTHER]), ("ACC-3", [OTHER])]
        retrievals = conn.execute(
            select(RetrievalRow.study_uid, RetrievalRow.series_uid, RetrievalRow.accession,
                   RetrievalRow.studies).order_by(RetrievalRow.id)
        ).all()  # fmt: skip
    marker = f"purged:{purge_id}"
    assert [tuple(r) for r in retrievals] == [
        (marker, marker, None, "[]"),
        (None, None, marker, "[]"),
        (None, None, "ACC-2", json.dumps([OTHER])),
        (OTHER, None, None, json.dumps([OTHER])),
        (marker, None, None, None),
    ]
    assert naming(queue.engine, STUDY) == []


def test_a_recalled_series_purged_leaves_no_withdrawal_waiting_for_its_deleted_result(
    queue: WorkQueue, book: PurgeBook
) -> None:
    series_id = classified(queue, 1)
    for due in queue.due_deliveries():
        queue.delivered(due.delivery_id)
    queue.forget_files(series_id, keep_result=True)  # kept for a recall (dicom_recall_keep_h)
    recalls = RecallBook(queue.engine, queue.lock)
    recall_id, _ = recalls.request("chest-xray", 3, "unsafe", "ops")
    recalls.apply_new()
    assert len(recalls.due()) == 2

    purge_id = book.request(STUDY, "the wrong patient", "ops")
    assert sorted(deleted(book)) == ["1.maps.zip", "1.sr.dcm"]
    assert recalls.due() == [] and not recalls.pending(series_id)
    recall = recalls.get(recall_id)
    assert recall is not None and recall["withdrawals"]["not_kept"] == 2
    assert {w["last_error"] for w in recall["open"]} == {f"the study was purged (purge {purge_id})"}
    assert {w["study_instance_uid"] for w in recall["open"]} == {f"purged:{purge_id}"}
    with queue.engine.connect() as conn:
        assert set(conn.scalars(select(WithdrawalRow.state))) == {"not_kept"}


def test_a_purge_finds_its_study_under_the_salt_before_a_rotation_and_may_find_nothing(
    queue: WorkQueue,
) -> None:
    received(queue, 1)
    asked = PurgeBook(queue.engine, queue.lock, ["old-salt"]).request(STUDY, "mistake", "ops")
    unknown = PurgeBook(queue.engine, queue.lock, ["old-salt"]).request("1.2.9", "mistake", "ops")
    rotated = PurgeBook(queue.engine, queue.lock, ["new-salt", "old-salt"])
    assert deleted(rotated) == ["1-1.dcm"]
    assert [(p["id"], p["state"], p["series"]) for p in rotated.list()] == [
        (unknown, "done", 0), (asked, "done", 1),
    ]  # fmt: skip


def test_the_study_sent_again_after_a_purge_that_blocks_nothing_is_a_new_arrival(
    queue: WorkQueue, book: PurgeBook
) -> None:
    first = classified(queue, 1)
    book.request(STUDY, "the wrong patient", "ops", block=False)
    deleted(book)
    assert not queue.is_known(meta(1, 1))
    outcome, again = queue.add_instance(meta(1, 1), "chest-xray", None, "again.dcm")
    assert outcome == "stored" and again != first
    row = queue.series(again)
    assert (row.state, row.study_uid, row.generation) == ("receiving", STUDY, 1)
