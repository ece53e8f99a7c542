"""The scans waiting for their exam's report, on SQLite and PostgreSQL: labelled by a report,
batched by version, a row relabelled while it was being sent is sent again, one already sent
with the same label is not, a correction that confirms no class retracts what was sent, an
exam's report is kept for scans to come, old rows go."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from service.dicom_node.outcome_book import OutcomeBook, reference_of
from service.dicom_node.tables import ExamReportRow, OutcomeRow
from service.jobs.store import utcnow

P = {"normal": 0.25, "pneumonia": 0.75}
SIGNED = "v1:" + "0a" * 32  # inference's signature of P, when it signs


@pytest.fixture
def book(engine: Engine) -> OutcomeBook:
    return OutcomeBook(engine)


def test_a_report_labels_its_exams_scans_which_are_sent_by_version(book: OutcomeBook) -> None:
    book.remember("ACC-1", "chest", 1, [("1.2.1", P, None), ("1.2.2", P, SIGNED)])
    book.remember("ACC-1", "chest", 2, [("1.2.1", P, None)])
    book.remember("ACC-2", "chest", 1, [("1.2.3", P, None)])
    assert book.due() == [] and book.known("ACC-1") and not book.known("ACC-9")
    assert book.label("ACC-1", lambda model, classes: None) == (0, 0)  # it names no class
    assert book.label("ACC-1", lambda model, classes: "pneumonia") == (3, 0)
    batches = {(b.model, b.version): b for b in book.due()}
    assert sorted(batches) == [("chest", 1), ("chest", 2)]
    first = batches[("chest", 1)]
    assert first.outcomes == [
        {"reference": reference_of("1.2.1"), "label": "pneumonia", "probabilities": P},
        {"reference": reference_of("1.2.2"), "label": "pneumonia", "probabilities": P,
         "signature": SIGNED},
    ]  # fmt: skip
    assert "1.2.1" not in reference_of("1.2.1")  # the UID itself never leaves
    book.label("ACC-1", lambda model, classes: "normal")  # corrected while it was on its way
    book.sent(first)
    book.sent(batches[("chest", 2)])
    again = book.due()  # what was sent is out of date: it goes again, as the correction says
    assert [(b.version, [o["label"] for o in b.outcomes]) for b in again] == [
        (1, ["normal", "normal"]), (2, ["normal"])
    ]  # fmt: skip
    book.later(again[0], "training service answered 503", 3600)
    book.refused(again[1], "training service answered 404: no model")
    assert book.due() == []
    book.label("ACC-1", lambda model, classes: "pneumonia")  # sent again on a new report
    assert sum(len(b.ids) for b in book.due()) == 3
    for batch in book.due():
        book.sent(batch)
    assert book.label("ACC-1", lambda model, classes: "pneumonia") == (3, 0)  # the same class
    assert book.due() == []  # already at the training service: not sent again
    waiting, cursor = book.page("waiting", None, 50)
    assert [(o["accession_number"], o["label"], cursor) for o in waiting] == [("ACC-2", None, None)]
    newest, cursor = book.page(None, None, 2)  # newest first, a page at a time
    assert [o["id"] for o in newest] == [4, 3] and cursor is not None
    rest, cursor = book.page(None, cursor, 2)
    assert [o["id"] for o in rest] == [2, 1] and cursor is None
    assert [o["signed"] for o in rest] == [True, False]


def test_a_correction_confirming_no_class_withdraws_the_labels_and_retracts_them(
    book: OutcomeBook,
) -> None:
    book.remember("ACC-1", "chest", 1, [("1.2.1", P, None), ("1.2.2", P, SIGNED)])
    book.remember("ACC-1", "ribs", 1, [("1.2.1", P, None)])
    book.remember("ACC-2", "chest", 1, [("1.2.3", P, None)])
    assert book.label("ACC-1", lambda model, classes: "pneumonia") == (3, 0)
    on_its_way = book.due()

    # corrected: nothing of chest's classes any more (ribs' finding stands)
    def newest(model: str, classes: list[str]) -> str | None:
        return None if model == "chest" else "fracture"

    assert book.label("ACC-1", newest) == (1, 2)
    for batch in on_its_way:  # the first reads arrive after the correction: chest's stay in line
        book.sent(batch)
    [ribs, chest] = sorted(book.due(), key=lambda b: b.model, reverse=True)
    assert (ribs.model, ribs.state, ribs.outcomes[0]["label"]) == ("ribs", "pending", "fracture")
    assert (chest.model, chest.state, chest.retracts) == ("chest", "retracting", True)
    assert chest.outcomes == [{"reference": reference_of("1.2.1")},
                              {"reference": reference_of("1.2.2")}]  # fmt: skip
    assert book.label("ACC-1", newest) == (1, 0)  # the same report again: nothing more to do
    book.later(chest, "training service answered 503", 0)
    [chest] = [b for b in book.due() if b.retracts]  # tried again, the same retraction
    book.sent(chest)
    book.sent(ribs)
    assert book.due() == []
    retracted, _ = book.page("retracted", None, 50)
    assert [(o["label"], o["next_attempt_at"]) for o in retracted] == [(None, None)] * 2
    waiting, _ = book.page("waiting", None, 50)
    assert [o["accession_number"] for o in waiting] == ["ACC-2"]  # another exam: untouched

    # a newer read confirms a class again: sent as an outcome once more, even while the
    # retraction it supersedes is still on its way
    assert book.label("ACC-1", lambda m, c: None) == (0, 1)  # ribs' too, now
    [going] = book.due()
    assert book.label("ACC-1", lambda m, c: "normal") == (3, 0)
    book.sent(going)  # the retraction's answer: ribs is left to go as `normal`
    assert sorted((b.model, b.state, len(b.ids)) for b in book.due()) == [
        ("chest", "pending", 2), ("ribs", "pending", 1)
    ]  # fmt: skip


def test_an_exams_newest_final_report_is_kept_for_scans_to_come(book: OutcomeBook) -> None:
    assert book.report_codes("ACC-1") is None
    book.keep_report("ACC-1", frozenset({"RID5350", "RADLEX|RID5350"}))
    book.keep_report("ACC-2", frozenset())
    assert book.report_codes("ACC-1") == {"RID5350", "RADLEX|RID5350"}
    book.keep_report("ACC-1", frozenset({"RID13173"}))  # the correction replaces it
    assert book.report_codes("ACC-1") == {"RID13173"} and book.report_codes("ACC-2") == set()
    book.remember("ACC-2", "chest", 1, [("1.2.1", P, None), ("1.2.2", P, None)])
    book.keep_report("ACC-3", frozenset({"RID5350"}))
    listed, cursor = book.exam_page(None, None, 2)  # newest first, with the scans here
    assert [(r.accession, scans) for r, scans in listed] == [("ACC-3", 0), ("ACC-2", 2)]
    rest, end = book.exam_page(None, cursor, 2)
    assert [r.accession for r, _ in rest] == ["ACC-1"] and end is None
    held, _ = book.exam_page(True, None, 50)
    assert [r.accession for r, _ in held] == ["ACC-3", "ACC-1"]  # no scan of theirs yet
    assert [r.accession for r, _ in book.exam_page(False, None, 50)[0]] == ["ACC-2"]
    book.drop_report("ACC-1")  # a newer read names no class followed
    assert book.report_codes("ACC-1") is None and book.report_codes("ACC-2") == set()


def test_old_rows_are_forgotten_and_the_unsent_counted(book: OutcomeBook) -> None:
    book.remember("ACC-1", "chest", 1, [("1.2.1", P, None)])
    book.remember("ACC-2", "chest", 1, [("1.2.2", P, None)])
    book.label("ACC-1", lambda model, classes: "pneumonia")
    book.keep_report("ACC-3", frozenset({"RID5350"}))
    assert book.forget_before(utcnow() - timedelta(hours=1)) == 0
    assert book.report_codes("ACC-3") is not None
    assert book.forget_before(utcnow() + timedelta(seconds=1)) == 1  # one labelled, unsent
    assert not book.known("ACC-1") and not book.known("ACC-2")
    assert book.report_codes("ACC-3") is None


def test_a_report_whose_scans_are_forgotten_goes_with_them_not_held(
    book: OutcomeBook, engine: Engine
) -> None:
    """Scans classified long ago, their report later: once the scans are forgotten, the report
    is not left waiting for them (counted held, it would tip the unmatched-reports alert); a
    report with a scan still followed stays, and so does one whose scans are still to come."""
    book.remember("ACC-1", "chest", 1, [("1.2.1", P, None)])
    book.remember("ACC-2", "chest", 1, [("1.2.2", P, None)])
    cutoff = utcnow() + timedelta(seconds=1)
    book.remember("ACC-2", "chest", 1, [("1.2.3", P, None)])  # scanned again, after the cutoff
    for accession in ("ACC-1", "ACC-2", "ACC-3"):
        book.keep_report(accession, frozenset({"RID5350"}))
    with engine.begin() as conn:
        later = select(func.max(OutcomeRow.id)).scalar_subquery()
        conn.execute(
            update(OutcomeRow).where(OutcomeRow.id == later)
            .values(created_at=cutoff + timedelta(minutes=1))
        )  # fmt: skip
        conn.execute(update(ExamReportRow).values(received_at=cutoff + timedelta(hours=1)))
    book.forget_before(cutoff)
    assert book.report_codes("ACC-1") is None  # its scans forgotten: done with
    assert book.report_codes("ACC-2") is not None  # a scan of its exam still followed
    assert book.report_codes("ACC-3") is not None  # no scan yet: held, for scans to come
    assert book.report_matches(cutoff + timedelta(days=2)) == (1, 1)


def test_settled_reports_are_counted_held_or_matched_for_the_alert(
    book: OutcomeBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.dicom_node import metrics, outcome_reports

    for accession in ("ACC-1", "ACC-2", "ACC-3"):
        book.keep_report(accession, frozenset({"RID5350"}))
    book.remember("ACC-2", "chest", 1, [("1.2.1", P, None)])  # only ACC-2's scan came
    assert book.report_matches(utcnow() + timedelta(seconds=1)) == (2, 1)
    assert book.report_matches(utcnow() - timedelta(days=1)) == (0, 0)  # none a day old yet
    # the reporter's round sets the gauges the chart's alert watches
    monkeypatch.setattr(outcome_reports, "SETTLED", timedelta(seconds=-1))
    reporter = outcome_reports.OutcomeReports(
        book, {"chest": {"pneumonia": ["RID5350"]}}, "http://127.0.0.1:9", None,
        timedelta(days=90), lambda attempts: 1.0,
    )  # fmt: skip
    assert reporter.step() is False  # nothing to send
    held, matched = (metrics.EXAM_REPORTS.labels(s)._value.get() for s in ("held", "matched"))
    assert (held, matched) == (2, 1)
