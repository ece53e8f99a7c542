"""The ORU^R01 that withdraws a result, rendered from the SR of real X-ray DICOM fixtures:
valid 2.5.1 (hl7apy, strict), read back by python-hl7, and naming the order and the
observations exactly as the result it voids did."""

from __future__ import annotations

from typing import Any

import hl7
import numpy as np
import pydicom
import pytest

from service.hospital.attention_map import LONGEST_SIDE, blend, build_attention_map
from service.hospital.hl7_withdrawal import build_withdrawal, withdrawal_control_id
from service.hospital.hl7v2 import Envelope, build_oru, control_id
from service.hospital.results import ReportSettings, ScanResult
from service.hospital.sr_findings import NotReportable
from tests.hospital.test_hl7v2 import MODEL, RESULTS, _sources, _sr, _strict

NASTY = "recalled|v3^bad&x~y\\z"  # every HL7 delimiter, the escape character too


def maps_of(
    sources: list[pydicom.Dataset], results: list[ScanResult] = RESULTS
) -> list[pydicom.Dataset]:
    """One attention map (a real Secondary Capture) per scan, as the node sends them."""
    grain = np.random.default_rng(1).random((LONGEST_SIDE, LONGEST_SIDE), dtype=np.float32)
    levels = np.zeros((LONGEST_SIDE, LONGEST_SIDE), dtype=np.uint8)
    settings = ReportSettings(uid_root="1.2.826.0.1.99")
    return [
        build_attention_map(source, blend(grain, levels), result, MODEL,
                            (pydicom.uid.generate_uid(), pydicom.uid.generate_uid()), i, settings)
        for i, (source, result) in enumerate(zip(sources, results, strict=True), start=2)
    ]  # fmt: skip


def _rows(er7: str, *, with_maps: bool = True) -> list[tuple[str, ...]]:
    """Each OBX as set ID, type, observation identifier, sub-ID and value."""
    return [
        (str(s[1]), str(s[2]), str(s[3]), str(s[4]), str(s[5]))
        for s in hl7.parse(er7).segments("OBX")
        if with_maps or str(s[2]) != "ED"
    ]


def _identity(msg: Any) -> tuple[str, ...]:
    """What a receiver files a result by: the patient and the order numbers."""
    pid, orc, obr = (msg.segment(name) for name in ("PID", "ORC", "OBR"))
    return str(pid[3]), str(pid[5]), str(orc[3]), str(obr[3]), str(obr[4]), str(obr[18])


def test_the_withdrawal_voids_every_observation_of_the_order_the_result_filed() -> None:
    sr = _sr(_sources(AccessionNumber="ACC-77"))
    sr.ContentDate, sr.ContentTime = "20260102", "090000"  # the result's time: OBR-22
    envelope = Envelope(receiving_application="RIS", receiving_facility="HOSP")
    original, withdrawal = build_oru(sr, envelope), build_withdrawal(sr, envelope, "recall")
    _strict(withdrawal)
    sent, void = hl7.parse(original), hl7.parse(withdrawal)
    assert str(void.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert _identity(void) == _identity(sent)
    assert str(void.segment("OBR")[3]) == "ACC-77"
    assert str(void.segment("OBR")[25]) == "C"  # table 0123: correction to results
    assert {str(s[11]) for s in void.segments("OBX")} == {"W"}  # table 0085: post as wrong
    assert _rows(withdrawal) == _rows(original)  # same set IDs, sub-IDs, identifiers, values
    assert len(_rows(withdrawal)) == 7
    assert str(sent.segment("OBR")[22]) == "20260102090000"
    # OBR-22, the status change, is the withdrawal's: a receiver ordering by it takes it last.
    assert str(void.segment("OBR")[22]) > "20260102090000"


def test_the_reason_comes_first_escaped_and_the_statement_after_it() -> None:
    sr = _sr(_sources())
    er7 = build_withdrawal(sr, reason=NASTY + "\rOBX|9|ST|x")  # a CR would start a segment
    _strict(er7)
    msg = hl7.parse(er7)
    notes = msg.segments("NTE")
    assert [str(n[1]) for n in notes] == ["1", "2"] and len(notes[0]) == 4  # no field added
    assert msg.unescape(str(notes[0][3])) == f"Withdrawn: {NASTY} OBX|9|ST|x"
    assert str(notes[1][3]) == "Not for diagnosis."
    assert len(msg.segments("OBX")) == 7
    assert str(hl7.parse(build_withdrawal(sr)).segment("NTE")[3]) == "Withdrawn"


def test_the_control_id_is_stable_and_not_the_results() -> None:
    sr = _sr(_sources())
    first, again = build_withdrawal(sr, reason="recall"), build_withdrawal(sr, reason="recall")
    ids = {str(hl7.parse(er7).segment("MSH")[10]) for er7 in (first, again)}
    assert ids == {withdrawal_control_id(sr)} and len(withdrawal_control_id(sr)) == 20
    assert withdrawal_control_id(sr) != control_id(sr)
    assert withdrawal_control_id(_sr(_sources())) != withdrawal_control_id(sr)


@pytest.mark.parametrize("cap", [None, 12_000])  # a receiver's cap on OBX-5: maps fitted
def test_a_result_sent_with_maps_is_withdrawn_row_for_row_maps_included(cap: int | None) -> None:
    sources = _sources()
    sr, maps = _sr(sources), maps_of(sources)
    original = build_oru(sr, Envelope(), maps, cap)
    assert sum(row[1] == "ED" for row in _rows(original)) == 2
    withdrawal = build_withdrawal(sr, Envelope(), "recall", maps, cap)  # (hl7apy's strict
    # rules cap ED at 199 characters, so the structure is checked above without maps)
    # every row the result filed, maps too, with its set ID, identifier, sub-ID and value:
    # a receiver matching rows by OBX-1 or by the whole row voids each, the pictures included
    assert _rows(withdrawal) == _rows(original)
    assert {str(s[11]) for s in hl7.parse(withdrawal).segments("OBX")} == {"W"}
    if cap is not None:
        assert all(len(row[4]) <= cap for row in _rows(withdrawal))


def _drop_groups(item: Any) -> None:
    """Remove every measurement group (DCM 125007) from the SR's content tree."""
    if "ContentSequence" not in item:
        return
    item.ContentSequence = [
        child
        for child in item.ContentSequence
        if not child.get("ConceptNameCodeSequence")
        or child.ConceptNameCodeSequence[0].CodeValue != "125007"
    ]
    for child in item.ContentSequence:
        _drop_groups(child)


def test_what_cannot_be_reported_cannot_be_withdrawn() -> None:
    with pytest.raises(NotReportable, match="no Patient ID"):
        build_withdrawal(_sr(_sources(PatientID="")), reason="recall")
    sr = _sr(_sources())
    _drop_groups(sr)
    with pytest.raises(NotReportable, match="no finding"):
        build_withdrawal(sr, reason="recall")
