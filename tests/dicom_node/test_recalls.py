"""Recalls in the work queue, on SQLite and the real PostgreSQL: what a recall stops, what it
withdraws, what it cannot (the result not kept), the race with a classification, and lifting
a recall (what it did stays; recalled again, it is made anew, and each withdrawal keeps the
reason it was made with: the worker tells a real HL7 receiver each round's own)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import hl7
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, select, update

from service.config import DicomNodeSettings
from service.dicom_node.classify import InferenceClient
from service.dicom_node.delivery import sender_for
from service.dicom_node.peers import DicomDestination
from service.dicom_node.queue import InstanceMeta, WorkQueue
from service.dicom_node.recalls import RecallBook
from service.dicom_node.spool import Spool
from service.dicom_node.tables import DeliveryRow, SeriesRow, WithdrawalRow
from service.dicom_node.worker import Worker
from service.jobs.database import MIGRATIONS
from service.jobs.store import utcnow
from tests.dicom_node.test_app import encoded
from tests.dicom_node.test_hl7 import Receiver
from tests.dicom_node.test_hl7 import receivers as receivers  # the fixture
from tests.hospital.test_hl7v2 import _sources, _sr

PACS, RIS = "PACS@h:104", "mllp://ris:2575/RIS"


@pytest.fixture
def queue(engine: Engine) -> WorkQueue:
    return WorkQueue(engine)


@pytest.fixture
def book(queue: WorkQueue) -> RecallBook:
    return RecallBook(queue.engine, queue.lock)


def classified(queue: WorkQueue, n: int, version: int = 3, model: str = "chest-xray") -> int:
    meta = InstanceMeta("1.2.3", f"1.2.3.{n}", f"1.2.3.{n}.1", "1.2", "CR", "CHEST", "MOD")
    _, series_id = queue.add_instance(meta, model, "production", f"{n}.dcm")
    queue.classified(series_id, f"2.25.{n}{version}", f"{n}.sr.dcm", [PACS, RIS], None, version)
    return series_id


def delivered_then_recalled(queue: WorkQueue, book: RecallBook, reason: str) -> tuple[int, int]:
    """A series delivered to both destinations, then its version recalled and the recall
    applied: (the series, the recall)."""
    series_id = classified(queue, 1)
    for due in queue.due_deliveries():
        queue.delivered(due.delivery_id)
    recall_id, _ = book.request("chest-xray", 3, reason, "ops")
    book.apply_new()
    return series_id, recall_id


def states(queue: WorkQueue, series_id: int) -> dict[str, str]:
    with queue.engine.connect() as conn:
        rows = conn.execute(
            select(DeliveryRow.destination, DeliveryRow.state).where(
                DeliveryRow.series_id == series_id
            )
        )
        return {destination: state for destination, state in rows}


def test_a_recall_stops_what_did_not_go_and_withdraws_what_went(
    queue: WorkQueue, book: RecallBook
) -> None:
    sent = classified(queue, 1)
    for due in queue.due_deliveries():
        queue.delivered(due.delivery_id)  # both went: the result is kept for a recall
    half = classified(queue, 2)
    ris = next(d for d in queue.due_deliveries() if d.series_id == half and d.destination == RIS)
    queue.delivered(ris.delivery_id)
    untouched = classified(queue, 3, version=4)
    gone = classified(queue, 4)
    for due in queue.due_deliveries():
        if due.series_id == gone:
            queue.delivered(due.delivery_id)
    queue.forget_files(gone)  # delivered before results were kept

    recall_id, new = book.request("chest-xray", 3, "misses pneumothorax", "ops")
    assert new and book.get(recall_id)["state"] == "new"  # type: ignore[index]
    assert sorted(book.apply_new()) == [sent, half, gone]
    assert states(queue, half) == {PACS: "recalled", RIS: "done"}
    assert states(queue, untouched) == {PACS: "pending", RIS: "pending"}
    assert queue.series(sent).state == queue.series(half).state == "recalled"
    assert queue.series(untouched).state == "delivering"

    view = book.get(recall_id)
    assert view is not None and view["state"] == "applied" and view["stopped"] == 1
    assert view["series"] == 3
    assert view["withdrawals"] == {
        "pending": 3, "done": 0, "rejected": 0, "expired": 0, "not_kept": 2
    }  # fmt: skip
    due = book.due()
    assert sorted((d.series_id, d.destination) for d in due) == [
        (sent, PACS), (sent, RIS), (half, RIS)
    ]  # fmt: skip
    assert {d.reason for d in due} == {"misses pneumothorax"}
    assert {d.result_file for d in due} == {"1.sr.dcm", "2.sr.dcm"}
    not_kept = [w for w in view["open"] if w["state"] == "not_kept"]
    assert {w["series_id"] for w in not_kept} == {gone}  # a person must act on these first
    assert view["open"][0]["state"] == "not_kept"


def test_a_second_recall_of_a_version_is_the_first_and_applying_again_adds_nothing(
    queue: WorkQueue, book: RecallBook
) -> None:
    series_id, first = delivered_then_recalled(queue, book, "first reason")
    again, new = book.request("chest-xray", 3, "second reason", "admin")
    assert (again, new) == (first, False)
    assert book.apply_new() == []
    view = book.get(first)
    assert view is not None and view["reason"] == "first reason"
    assert view["withdrawals"]["pending"] == 2
    assert [r["id"] for r in book.list()] == [first]
    assert book.pending(series_id)


def test_a_series_classified_as_the_recall_came_is_held_and_recalled(
    queue: WorkQueue, book: RecallBook
) -> None:
    """The classification finished after the recall was applied: its deliveries are due, but
    the worker holds them back and applies the recall to it."""
    book.request("chest-xray", 3, "unsafe", "ops")
    book.apply_new()
    late = classified(queue, 1)
    other = classified(queue, 2, version=2)
    due = {d.series_id for d in queue.due_deliveries()}
    assert book.held(due) == {late}
    book.apply_to({late})
    assert states(queue, late) == {PACS: "recalled", RIS: "recalled"}
    assert queue.series(late).state == "recalled" and not book.pending(late)
    assert {d.series_id for d in queue.due_deliveries()} == {other}


def test_withdrawals_end_done_rejected_or_expired_and_failures_back_off(
    queue: WorkQueue, book: RecallBook
) -> None:
    series_id, recall_id = delivered_then_recalled(queue, book, "unsafe")
    pacs, ris = sorted(book.due(), key=lambda d: d.destination)
    book.failed(pacs.withdrawal_id, "association not established", 60)
    assert [d.destination for d in book.due()] == [RIS]
    assert not book.ended(ris.withdrawal_id, "rejected", "HL7 ACK CR")  # the PACS is pending
    with queue.engine.begin() as conn:  # the PACS stayed away past the retention limit
        conn.execute(update(WithdrawalRow).values(created_at=utcnow() - timedelta(hours=80)))
    assert book.expire(utcnow() - timedelta(hours=72)) == [series_id]
    view = book.get(recall_id)
    assert view is not None
    assert view["withdrawals"] == {
        "pending": 0, "done": 0, "rejected": 1, "expired": 1, "not_kept": 0
    }  # fmt: skip
    errors = {w["destination"]: (w["last_error"], w["attempts"]) for w in view["open"]}
    assert errors == {PACS: ("past the retention limit", 1), RIS: ("HL7 ACK CR", 1)}


def test_a_recall_s_open_withdrawals_say_when_each_is_tried_next(
    queue: WorkQueue, book: RecallBook
) -> None:
    """As a series' deliveries do: a pending one its next try (its back-off's end), one no
    longer tried none."""
    _, recall_id = delivered_then_recalled(queue, book, "unsafe")
    pacs, ris = sorted(book.due(), key=lambda d: d.destination)
    failed_at = utcnow()
    book.failed(pacs.withdrawal_id, "association not established", 60)
    book.ended(ris.withdrawal_id, "rejected", "HL7 ACK CR")
    view = book.get(recall_id)
    assert view is not None
    due = {w["destination"]: w["next_attempt_at"] for w in view["open"]}
    assert due[RIS] is None
    next_try = datetime.fromisoformat(due[PACS])
    assert next_try.utcoffset() == timedelta(0)  # ISO 8601 in UTC
    assert failed_at + timedelta(seconds=60) <= next_try <= utcnow() + timedelta(seconds=60)
    assert book.retry(recall_id) == 1  # sent again: due at once
    view = book.get(recall_id)
    assert view is not None
    [again] = [w for w in view["open"] if w["destination"] == RIS]
    assert again["state"] == "pending"
    assert failed_at <= datetime.fromisoformat(again["next_attempt_at"]) <= utcnow()


def test_a_delivered_result_is_kept_until_the_recall_window_passes(
    queue: WorkQueue, book: RecallBook
) -> None:
    series_id = classified(queue, 1)
    for due in queue.due_deliveries():
        queue.delivered(due.delivery_id)
    queue.forget_files(series_id, keep_result=True)
    assert queue.series(series_id).result_file == "1.sr.dcm"
    assert book.kept_past(utcnow() - timedelta(hours=1)) == []
    with queue.engine.begin() as conn:
        conn.execute(update(SeriesRow).values(finished_at=utcnow() - timedelta(hours=2)))
    assert book.kept_past(utcnow() - timedelta(hours=1)) == [series_id]


def test_the_versions_to_ask_the_registry_about_are_those_with_results_not_recalled(
    queue: WorkQueue, book: RecallBook
) -> None:
    classified(queue, 1, version=3)
    classified(queue, 2, version=4)
    classified(queue, 3, version=4, model="knee")
    meta = InstanceMeta("1.2.3", "1.2.3.9", "1.2.3.9.1", "1.2", "CR", "CHEST", "MOD")
    queue.add_instance(meta, "chest-xray", None, "9.dcm")  # not classified: no version yet
    assert book.unrecalled_versions() == [("chest-xray", 3), ("chest-xray", 4), ("knee", 4)]
    book.request("chest-xray", 3, "unsafe", "registry (owner)")
    assert book.unrecalled_versions() == [("chest-xray", 4), ("knee", 4)]


def test_a_refused_withdrawal_keeps_its_result_to_be_sent_again(
    queue: WorkQueue, book: RecallBook
) -> None:
    """The RIS refused the correction (a message type it does not take): once mended, a
    person sends it again; the result is kept for that until the retention limit."""
    series_id, recall_id = delivered_then_recalled(queue, book, "unsafe")
    pacs, ris = sorted(book.due(), key=lambda d: d.destination)
    assert not book.ended(pacs.withdrawal_id, "done")
    assert not book.ended(ris.withdrawal_id, "rejected", "HL7 ACK CR")  # kept: not settled
    assert book.refused_kept(utcnow() - timedelta(hours=72)) == []
    assert book.refused_kept(utcnow() + timedelta(seconds=1)) == [series_id]
    assert book.retry(recall_id) == 1
    [again] = book.due()
    assert (again.withdrawal_id, again.attempts) == (ris.withdrawal_id, 1)
    assert book.retry(recall_id) == 0  # nothing refused now
    assert book.ended(again.withdrawal_id, "done")  # all withdrawn: the result may go
    view = book.get(recall_id)
    assert view is not None and view["withdrawals"]["done"] == 2 and view["open"] == []
    gone = classified(queue, 2, version=5)  # refused, then deleted at the retention limit
    for due in queue.due_deliveries():
        queue.delivered(due.delivery_id)
    other, _ = book.request("chest-xray", 5, "unsafe too", "ops")
    book.apply_new()
    for due in book.due():
        book.ended(due.withdrawal_id, "rejected", "refused")
    queue.forget_files(gone)
    assert book.retry(other) == 0


def test_a_lifted_recall_holds_nothing_back_and_keeps_what_it_did(
    queue: WorkQueue, book: RecallBook
) -> None:
    series_id, recall_id = delivered_then_recalled(queue, book, "unsafe")
    assert book.lift(recall_id, "recalled by mistake", "safety")
    assert not book.lift(recall_id, "twice", "safety")  # lifted already
    assert not book.lift(recall_id + 1, "unknown", "safety")
    view = book.get(recall_id)
    assert view is not None and view["state"] == "lifted" and view["lifted_at"] is not None
    assert (view["lifted_by"], view["lift_reason"]) == ("safety", "recalled by mistake")
    assert view["reason"] == "unsafe" and view["series"] == 1  # what it did stays
    assert queue.series(series_id).state == "recalled"
    assert view["withdrawals"]["pending"] == 2
    assert sorted(d.destination for d in book.due()) == [PACS, RIS]  # withdrawals go on
    later = classified(queue, 2)
    assert {d.series_id for d in queue.due_deliveries()} == {later}
    assert book.held({later}) == set()  # delivered like any other
    assert book.apply_new() == []
    assert book.unrecalled_versions() == [("chest-xray", 3)]  # the registry is asked again


def test_a_recall_lifted_as_a_late_series_was_held_is_not_applied_to_it(
    queue: WorkQueue, book: RecallBook
) -> None:
    recall_id, _ = book.request("chest-xray", 3, "unsafe", "ops")
    book.apply_new()
    late = classified(queue, 1)
    held = book.held({late})
    assert held == {late}
    book.lift(recall_id, "a mistake", "ops")  # between the worker's look and its applying
    book.apply_to(held)
    assert queue.series(late).state == "delivering"
    assert states(queue, late) == {PACS: "pending", RIS: "pending"}


def test_recalled_again_after_a_lift_the_recall_is_made_anew_for_what_came_since(
    queue: WorkQueue, book: RecallBook
) -> None:
    first, recall_id = delivered_then_recalled(queue, book, "unsafe")
    book.lift(recall_id, "reviewed: fine", "safety")
    later = classified(queue, 2)
    pacs = next(d for d in queue.due_deliveries() if d.destination == PACS)
    queue.delivered(pacs.delivery_id)  # the PACS has its result, the RIS not yet

    assert book.request("chest-xray", 3, "unsafe after all", "board") == (recall_id, True)
    view = book.get(recall_id)
    assert view is not None and view["state"] == "new" and view["applied_at"] is None
    assert (view["reason"], view["requested_by"]) == ("unsafe after all", "board")
    assert view["lifted_at"] is view["lifted_by"] is view["lift_reason"] is None
    assert book.request("chest-xray", 3, "a third", "ops") == (recall_id, False)  # in force
    assert book.held({later}) == {later}
    assert book.apply_new() == [later]  # the first series was recalled already
    assert states(queue, later) == {PACS: "done", RIS: "recalled"}
    assert queue.series(first).state == queue.series(later).state == "recalled"
    view = book.get(recall_id)
    assert view is not None and view["state"] == "applied" and view["series"] == 2
    assert view["withdrawals"]["pending"] == 3 and view["stopped"] == 1
    assert {(d.series_id, d.destination) for d in book.due()} == {
        (first, PACS), (first, RIS), (later, PACS)
    }  # fmt: skip
    assert [r["id"] for r in book.list()] == [recall_id]


def test_the_recalls_the_registry_watch_made_are_its_own_to_lift(
    queue: WorkQueue, book: RecallBook
) -> None:
    mine, _ = book.request("chest-xray", 3, "withdrawn", "registry (owner)")
    theirs, _ = book.request("chest-xray", 4, "unsafe", "registry-admin")  # a person's key
    lifted, _ = book.request("knee", 1, "withdrawn", "registry (owner)")
    book.lift(lifted, "put back", "ops")
    assert book.made_by("registry (") == [(mine, "chest-xray", 3)]
    assert not book.lift(theirs, "put back", "registry (owner)", made_by="registry (")
    assert book.get(theirs)["state"] == "new"  # type: ignore[index]
    assert book.lifted_at("chest-xray", 3) is None  # in force
    assert book.lifted_at("knee", 2) is None  # never recalled
    at = book.lifted_at("knee", 1)
    assert at is not None and at.tzinfo is not None
    assert book.lift(mine, "put back", "registry (owner)", made_by="registry (")
    assert book.made_by("registry (") == []


def test_a_recalled_series_sent_again_is_new_work_with_a_result_of_its_own(
    queue: WorkQueue, book: RecallBook
) -> None:
    """After a recall, the hospital sends the studies again (the modality, a retrieval) to
    have them read by the version their route names now: the instances are new work, not
    duplicates, and their result's UIDs are not the recalled one's, which the PACS took a
    rejection note of."""
    from service.dicom_node.report import result_uids

    series_id, _ = delivered_then_recalled(queue, book, "misses pneumothorax")
    meta = InstanceMeta("1.2.3", "1.2.3.1", "1.2.3.1.1", "1.2", "CR", "CHEST", "MOD")
    outcome, again = queue.add_instance(meta, "chest-xray", "production", "1-again.dcm")
    assert (outcome, queue.series(series_id).state) == ("stored", "recalled")
    assert again != series_id and queue.series(again).generation == 2
    assert queue.add_instance(meta, "chest-xray", "production", "x.dcm") == ("duplicate", again)
    first = result_uids(None, "1.2.3", "1.2.3.1", "chest-xray", 3, ["1.2.3.1.1"])
    second = result_uids(None, "1.2.3", "1.2.3.1", "chest-xray", 3, ["1.2.3.1.1"], 2)
    assert first[0] == second[0] and first[1] != second[1]  # the SR series, a new SR
    assert result_uids(None, "1.2.3", "1.2.3.1", "chest-xray", 3, ["1.2.3.1.1"], 1) == first


def test_recalled_again_each_withdrawal_keeps_the_reason_it_was_made_with(
    queue: WorkQueue, book: RecallBook
) -> None:
    """The RIS away through a lift and a second recall with another reason: its withdrawal
    of the first round is still sent with the first reason, and so is one refused then sent
    again; those of the second round go with the second."""
    first, recall_id = delivered_then_recalled(queue, book, "misses pneumothorax")
    pacs, ris = sorted(book.due(), key=lambda d: d.destination)
    book.failed(ris.withdrawal_id, "MLLP failed (ConnectionRefusedError)", 0)
    book.ended(pacs.withdrawal_id, "rejected", "refused")
    book.lift(recall_id, "reviewed: fine", "safety")
    later = classified(queue, 2)
    for due in queue.due_deliveries():
        queue.delivered(due.delivery_id)
    assert book.request("chest-xray", 3, "misses effusions", "board") == (recall_id, True)
    assert book.apply_new() == [later]
    assert book.retry(recall_id) == 1  # the PACS mended: the first round's, sent again

    reasons = {(d.series_id, d.destination): d.reason for d in book.due()}
    assert reasons == {
        (first, PACS): "misses pneumothorax", (first, RIS): "misses pneumothorax",
        (later, PACS): "misses effusions", (later, RIS): "misses effusions",
    }  # fmt: skip
    view = book.get(recall_id)
    assert view is not None and view["reason"] == "misses effusions"
    shown = {(w["series_id"], w["destination"]): w["reason"] for w in view["open"]}
    assert shown == reasons


def test_the_worker_tells_the_receiver_the_reason_of_each_round(
    queue: WorkQueue, book: RecallBook, tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    """The RIS answers AE to the first withdrawal (away for a while): pending through the
    lift and the second recall, it goes once the RIS is back, with the first reason, and the
    second round's with the second."""
    receiver = receivers(["AE", "AA"])
    ris = DicomDestination.model_validate({"hl7": {"host": "127.0.0.1", "port": receiver.port}})
    spool = Spool(tmp_path / "spool")
    worker = Worker(
        DicomNodeSettings(dicom_spool_dir=str(spool.root), dicom_recall_keep_h=24), queue, spool,
        InferenceClient("http://127.0.0.1:9", None, 1), {ris.key: sender_for(ris, "NODE", 10)},
    )  # fmt: skip

    def delivered(n: int) -> str:
        """A series' result delivered to the RIS; its study's UID."""
        sr = _sr(_sources())
        name = spool.write(encoded(sr), ".sr.dcm")
        meta = InstanceMeta("1.2.3", f"1.2.3.{n}", f"1.2.3.{n}.1", "1.2", "CR", "CHEST", "MOD")
        _, series_id = queue.add_instance(meta, "chest-xray", "production", f"{n}.dcm")
        queue.classified(series_id, str(sr.SOPInstanceUID), name, [ris.key], None, 3)
        for due in queue.due_deliveries():
            queue.delivered(due.delivery_id)
        return str(sr.StudyInstanceUID)

    try:
        first = delivered(1)
        recall_id, _ = book.request("chest-xray", 3, "misses pneumothorax", "ops")
        worker.step()  # applied, and withdrawn: the RIS answers AE
        assert [r.answered for r in receiver.received] == ["AE"]
        book.lift(recall_id, "reviewed: fine", "safety")
        later = delivered(2)
        book.request("chest-xray", 3, "misses effusions", "board")
        with queue.engine.begin() as conn:  # the RIS back, the back-off past
            conn.execute(update(WithdrawalRow).values(next_attempt_at=utcnow()))
        worker.step()
    finally:
        worker.stop()
    notes = {}
    for message in receiver.accepted():
        [nte] = [s for s in hl7.parse(message.er7).segments("NTE") if "Withdrawn" in str(s)]
        study = first if first in message.er7 else later
        notes[study] = str(nte[3])
    assert notes == {first: "Withdrawn: misses pneumothorax", later: "Withdrawn: misses effusions"}
    view = book.get(recall_id)
    assert view is not None and view["withdrawals"]["done"] == 2


def test_the_migration_gives_the_withdrawals_made_before_their_recall_s_reason(
    queue: WorkQueue, book: RecallBook
) -> None:
    _, recall_id = delivered_then_recalled(queue, book, "misses pneumothorax")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with queue.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0017_dicom_purge_blocks")
        command.upgrade(config, "head")
    with queue.engine.connect() as conn:
        reasons = set(conn.scalars(select(WithdrawalRow.reason)))
    assert reasons == {"misses pneumothorax"}
    book.lift(recall_id, "reviewed: fine", "safety")
    book.request("chest-xray", 3, "misses effusions", "board")
    assert {d.reason for d in book.due()} == {"misses pneumothorax"}
