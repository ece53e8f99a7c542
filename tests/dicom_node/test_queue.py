"""The work queue on SQLite and the real PostgreSQL: intake, quiet series, deliveries,
recovery after a crash, retention; and the worker's steps over it with real files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from service.dicom_node.queue import InstanceMeta, WorkQueue, chosen_destinations
from service.dicom_node.report import result_uids
from service.dicom_node.spool import Spool
from service.dicom_node.tables import SeriesRow
from service.jobs.store import utcnow


@pytest.fixture
def queue(engine: Engine) -> WorkQueue:
    return WorkQueue(engine)


def meta(sop: str, series: str = "1.2.3.1", study: str = "1.2.3") -> InstanceMeta:
    return InstanceMeta(study, series, sop, "1.2.840.10008.5.1.4.1.1.7", "CR", "CHEST", "MOD")


def age(queue: WorkQueue, seconds: float) -> None:
    """Move every series' times `seconds` into the past."""
    past = utcnow() - timedelta(seconds=seconds)
    with queue.engine.begin() as conn:
        conn.execute(update(SeriesRow).values(last_instance_at=past, created_at=past))


def test_instances_of_a_series_join_one_work_item_and_a_resend_is_a_duplicate(
    queue: WorkQueue,
) -> None:
    first = queue.add_instance(meta("1.1"), "chest-xray", "production", "a.dcm")
    second = queue.add_instance(meta("1.2"), "chest-xray", "production", "b.dcm")
    assert first[0] == second[0] == "stored" and first[1] == second[1]
    assert queue.is_known(meta("1.1")) and not queue.is_known(meta("1.3"))
    assert queue.add_instance(meta("1.1"), "chest-xray", None, "c.dcm") == ("duplicate", first[1])
    assert [i.file for i in queue.instances(first[1])] == ["a.dcm", "b.dcm"]
    assert queue.stats().depth == 1


@pytest.mark.parametrize("ended", ["failed", "expired"])
def test_a_series_that_failed_takes_its_instances_again_as_a_new_work_item(
    queue: WorkQueue, ended: str
) -> None:
    """Its files were deleted unclassified (a withdrawn version, inference refusing): sent
    again (the modality, or a retrieval), its instances make a new work item, not duplicates.
    A series that got its result still takes a resend as a duplicate: no result twice."""
    _, first = queue.add_instance(meta("1.1"), "chest-xray", None, "a.dcm")
    queue.finish(first, ended, "inference answered 410")
    queue.forget_files(first)
    assert not queue.is_known(meta("1.1"))
    again = queue.add_instance(meta("1.1"), "chest-xray", None, "b.dcm")
    assert again[0] == "stored" and again[1] != first
    assert queue.series(again[1]).generation == 2 and queue.series(again[1]).state == "receiving"
    assert [i.file for i in queue.instances(again[1])] == ["b.dcm"]
    age(queue, 10)
    assert queue.claim_quiet(quiet_s=5) is not None
    queue.classified(again[1], "2.25.9", "r.sr.dcm", ["pacs"])
    assert queue.add_instance(meta("1.1"), "chest-xray", None, "c.dcm") == ("duplicate", again[1])


def test_a_series_keeps_the_destinations_its_route_chose_for_each_of_its_work_items(
    queue: WorkQueue,
) -> None:
    chosen = ["mllp://engine:6661/RIS"]
    _, first = queue.add_instance(meta("1.1"), "chest-xray", None, "a.dcm", chosen)
    queue.add_instance(meta("1.2"), "chest-xray", None, "b.dcm", ["ignored: the item is open"])
    _, other = queue.add_instance(meta("2.1", series="1.2.3.2"), "chest-xray", None, "c.dcm")
    age(queue, 10)
    claimed = [queue.claim_quiet(quiet_s=5), queue.claim_quiet(quiet_s=5)]
    by_id = {row.id: chosen_destinations(row) for row in claimed if row is not None}
    assert by_id == {first: chosen, other: None}  # None: every destination
    queue.classified(first, "2.25.1", "r.sr.dcm", chosen)
    later = queue.add_instance(meta("1.3"), "chest-xray", None, "d.dcm", ["PACS@h:104"])
    assert later[1] not in (first, other)  # sent after the result: a work item of its own
    assert chosen_destinations(queue.series(later[1])) == ["PACS@h:104"]


def test_a_series_is_claimed_only_once_quiet_and_only_once(queue: WorkQueue) -> None:
    queue.add_instance(meta("1.1"), "chest-xray", None, "a.dcm")
    assert queue.claim_quiet(quiet_s=5) is None
    age(queue, 10)
    claimed = queue.claim_quiet(quiet_s=5)
    assert claimed is not None and claimed.state == "classifying"
    assert queue.claim_quiet(quiet_s=5) is None
    # A new instance of the series while it is classified opens the next work item.
    outcome, series_id = queue.add_instance(meta("1.2"), "chest-xray", None, "b.dcm")
    assert outcome == "stored" and series_id != claimed.id
    assert queue.series(series_id).generation == 2


def test_recover_puts_a_classification_cut_short_back_in_line(queue: WorkQueue) -> None:
    queue.add_instance(meta("1.1"), "chest-xray", None, "a.dcm")
    age(queue, 10)
    claimed = queue.claim_quiet(quiet_s=1)
    assert claimed is not None
    assert queue.recover() == 1
    assert queue.claim_quiet(quiet_s=1) is None  # the outage was not quiet: wait again
    age(queue, 10)
    again = queue.claim_quiet(quiet_s=1)
    assert again is not None and again.id == claimed.id


def classified(queue: WorkQueue, destinations: list[str]) -> int:
    """A series received, quiet, classified: its result `r.sr.dcm` due to `destinations`."""
    _, series_id = queue.add_instance(meta("1.1"), "chest-xray", None, "a.dcm")
    age(queue, 10)
    assert queue.claim_quiet(quiet_s=1) is not None
    queue.classified(series_id, "2.25.1", "r.sr.dcm", destinations)
    return series_id


def test_a_results_maps_are_named_after_it_so_a_restart_keeps_them(queue: WorkQueue) -> None:
    classified(queue, ["PACS@h:104"])
    assert queue.files() == {"a.dcm", "r.sr.dcm", "r.maps.zip"}  # swept: anything else


def test_deliveries_finish_the_series_when_the_last_is_done_and_failures_back_off(
    queue: WorkQueue,
) -> None:
    series_id = classified(queue, ["PACS@h:104", "http://pacs/dicom-web"])
    due = queue.due_deliveries()
    assert sorted(d.destination for d in due) == ["PACS@h:104", "http://pacs/dicom-web"]
    assert {d.result_file for d in due} == {"r.sr.dcm"}
    first, second = due
    queue.delivery_failed(first.delivery_id, "down", delay_s=60)
    assert [d.delivery_id for d in queue.due_deliveries()] == [second.delivery_id]
    assert queue.delivered(second.delivery_id) is None  # the other is still pending
    assert queue.stats().depth == 1
    with queue.engine.begin() as conn:  # the back-off has passed
        from service.dicom_node.tables import DeliveryRow

        conn.execute(update(DeliveryRow).values(next_attempt_at=utcnow()))
    assert queue.delivered(first.delivery_id) == "done"
    assert queue.series(series_id).state == "done"
    assert queue.stats().depth == 0


def test_a_rejected_delivery_ends_the_series_rejected_until_it_is_sent_again(
    queue: WorkQueue,
) -> None:
    series_id = classified(queue, ["PACS@h:104", "mllp://ris:2575/RIS"])
    pacs, ris = queue.due_deliveries()
    assert queue.delivery_rejected(ris.delivery_id, "HL7 ACK CR") is None  # PACS pending
    assert [d.delivery_id for d in queue.due_deliveries()] == [pacs.delivery_id]
    assert queue.delivered(pacs.delivery_id) == "rejected"
    series = queue.series(series_id)
    assert (series.state, series.result_file) == ("rejected", "r.sr.dcm")  # kept to resend
    assert queue.stats().depth == 0 and queue.due_deliveries() == []
    assert queue.rejected_kept(utcnow()) == [series_id]
    assert queue.rejected_kept(utcnow() - timedelta(hours=1)) == []  # not past retention

    queue.send_now(series_id)  # the RIS is mended: a person sends it again
    assert queue.series(series_id).state == "delivering"
    assert [d.delivery_id for d in queue.due_deliveries()] == [ris.delivery_id]
    assert queue.delivered(ris.delivery_id) == "done"


def test_a_destination_that_takes_only_other_findings_is_recorded_skipped_never_sent(
    queue: WorkQueue,
) -> None:
    _, series_id = queue.add_instance(meta("1.1"), "chest-xray", None, "a.dcm")
    age(queue, 10)
    assert queue.claim_quiet(quiet_s=1) is not None
    why = "not sent: it takes only pneumonia, and no scan was answered so"
    queue.classified(series_id, "2.25.1", "r.sr.dcm", [], {"mllp://ward:2575/WARD": why})
    assert queue.series(series_id).state == "done" and queue.due_deliveries() == []
    queue.send_now(series_id)  # a person's "send now" does not send it either
    assert queue.due_deliveries() == [] and queue.stats().depth == 0
    from service.dicom_node.ledger import SeriesLedger

    (shown,) = SeriesLedger(queue.engine).get(series_id)["deliveries"]  # type: ignore[index]
    assert (shown["state"], shown["last_error"], shown["next_attempt_at"]) == ("skipped", why, None)


def test_unrouted_series_are_noted_once_and_pending_age_is_reported(queue: WorkQueue) -> None:
    assert queue.note_unrouted(meta("1.1", series="9.9")) is True
    assert queue.note_unrouted(meta("1.2", series="9.9")) is False
    assert queue.stats().depth == 0 and queue.stats().oldest_age_s == 0
    queue.add_instance(meta("1.1"), "chest-xray", None, "a.dcm")
    age(queue, 30)
    assert queue.stats().oldest_age_s >= 30
    assert queue.older_than(utcnow() - timedelta(seconds=20)) != []
    assert queue.older_than(utcnow() - timedelta(seconds=60)) == []


def test_result_uids_are_the_same_for_the_same_sources_and_model_version() -> None:
    one = result_uids(None, "1.2", "1.2.1", "m", 1, ["1.2.1.1", "1.2.1.2"])
    assert one == result_uids(None, "1.2", "1.2.1", "m", 1, ["1.2.1.2", "1.2.1.1"])
    assert one[1] != result_uids(None, "1.2", "1.2.1", "m", 2, ["1.2.1.1", "1.2.1.2"])[1]
    assert one[0].startswith("2.25.") and len(one[1]) <= 64
    rooted = result_uids("1.2.826.0.1.3680043.8.498", "1.2", "1.2.1", "m", 1, ["1"])
    assert all(u.startswith("1.2.826.0.1.3680043.8.498.") and len(u) <= 64 for u in rooted)


def test_the_spool_writes_whole_files_under_random_names(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    name = spool.write(b"DICM data")
    assert spool.read(name) == b"DICM data" and len(name) == 36
    assert (tmp_path / "spool" / name).stat().st_mode & 0o777 == 0o600
    assert spool.names() == {name} and spool.partials() == []
    with pytest.raises(ValueError):
        spool.path("../escape")
    spool.delete(name)
    assert spool.names() == set()


def test_orders_wait_once_per_accession_number_and_end_fetched_cancelled_or_expired(
    queue: WorkQueue,
) -> None:
    from service.dicom_node.order_book import OrderBook

    book = OrderBook(queue.engine)
    assert [book.take("RIS-1"), book.take("RIS-1"), book.take("RIS-2")] == [
        "queued", "duplicate", "queued",
    ]  # fmt: skip
    first, second = book.due()
    assert (first.accession, second.accession, first.attempts) == ("RIS-1", "RIS-2", 0)
    book.later(first.id, "not in the PACS yet", delay_s=60)
    assert [o.accession for o in book.due()] == ["RIS-2"]  # RIS-1 waits out its back-off
    book.fetched(second.id, ["1.2.3"])
    assert book.cancel("RIS-1") == 1 and book.cancel("RIS-1") == 0
    book.expired(first.id, "too late")  # cancelled first: stays cancelled
    assert book.take("RIS-1") == "queued"  # a new order once none waits
    items, cursor = book.page(None, 2)
    assert [(o["accession_number"], o["state"]) for o in items] == [
        ("RIS-1", "waiting"), ("RIS-2", "fetched"),
    ]  # fmt: skip
    assert items[1]["study_instance_uids"] == ["1.2.3"] and items[1]["next_attempt_at"] is None
    rest, end = book.page(cursor, 2)
    assert [(o["state"], o["attempts"], o["last_error"]) for o in rest] == [
        ("cancelled", 1, "not in the PACS yet"),
    ]  # fmt: skip
    assert end is None
