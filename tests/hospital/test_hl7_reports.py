"""The RIS's reports (HL7 v2 ORU^R01) read for their status, accession number and coded
findings, one an exam, and matched to a model's classes by a site's codes."""

from __future__ import annotations

import pytest

from service.hospital.hl7_orders import Refused, read_message
from service.hospital.hl7_reports import Report, classes_named, reports_of

CODES = {"pneumonia": ["RID5350", "SCT|233604007"], "normal": ["RID13173", "I10|Z00.00"]}


def oru(
    status: str = "F",
    findings: tuple[str, ...] = ("CWE|RID5350^pneumonia^RADLEX",),
    obr18: str = "RIS-7",
) -> bytes:
    """A signed report: OBR-25 `status`, the text of the impression, `findings` as OBX
    (type|value)."""
    segments = [
        "MSH|^~\\&|RIS|HOSP|SCANTUNE|HOSP|20261207090000||ORU^R01^ORU_R01|REP-1|P|2.5.1",
        "PID|1||P-1^^^HOSP^MR||Doe^Jane",
        "ORC|RE|PL-1|FL-77||CM",
        f"OBR|1|PL-1|FL-77|CXR^Chest X-ray|||20261207080000|||||||||||{obr18}"
        f"||||20261207090000|||{status}",  # OBR-22 the report's time, OBR-25 its status
        "OBX|1|TX|IMP^Impression||Right lower lobe consolidation.||||||F",
        *(
            f"OBX|{i}|{kind}|FIND^Finding||{value}||||||F"
            for i, (kind, value) in enumerate((f.split("|", 1) for f in findings), start=2)
        ),
    ]
    return "\r".join(segments).encode() + b"\r"


def read(data: bytes, field: str = "OBR-18") -> Report:
    (report,) = reports_of(read_message(data), field)  # type: ignore[arg-type]
    return report


def group(accession: str, finding: str, status: str = "F", orc3: str = "FL-78") -> bytes:
    """One more exam's ORC, OBR (OBR-18 `accession`, OBR-25 `status`) and coded finding."""
    return (
        f"ORC|RE|PL-2|{orc3}||CM\rOBR|2|PL-2|{orc3}|CXR^Chest X-ray|||20261207080000"
        f"|||||||||||{accession}||||20261207090000|||{status}\r"
        f"OBX|1|CWE|FIND^Finding||{finding}||||||F\r"
    ).encode()


def test_a_final_report_gives_its_exam_and_coded_findings() -> None:
    report = read(oru())
    assert (report.accession, report.status, report.final) == ("RIS-7", "F", True)
    assert {"RID5350", "RADLEX|RID5350"} <= report.codes
    assert classes_named(CODES, report.codes) == {"pneumonia"}
    assert read(oru(), "OBR-3").accession == "FL-77"
    assert read(oru("C")).final and not read(oru("P")).final  # a correction is final too


def test_codes_are_read_from_coded_values_only_in_any_of_their_places() -> None:
    # The alternate code (components 4 and 6) and repetitions count; free text never does.
    alternate = read(oru(findings=("CE|L-1^local^99LOC^233604007^pneumonia^SCT",)))
    assert classes_named(CODES, alternate.codes) == {"pneumonia"}  # SCT|233604007
    repeated = read(oru(findings=("CWE|X1^x^99LOC~RID13173^normal^RADLEX",)))
    assert classes_named(CODES, repeated.codes) == {"normal"}
    text = read(oru(findings=("TX|RID5350",)))
    assert classes_named(CODES, text.codes) == set()
    wrong_system = read(oru(findings=("CWE|233604007^pneumonia^LN",)))
    assert classes_named(CODES, wrong_system.codes) == set()  # only SCT's 233604007 counts
    both = read(oru(findings=("CWE|RID5350^p^RADLEX", "CWE|RID13173^n^RADLEX")))
    assert classes_named(CODES, both.codes) == {"pneumonia", "normal"}  # a person decides


def test_a_report_without_its_exam_is_refused_with_the_reason() -> None:
    with pytest.raises(Refused, match="the report has no accession number in OBR-18") as exc:
        read(oru(obr18=""))
    assert exc.value.code == "AE" and exc.value.header is not None
    no_obr = oru().replace(b"\rOBR|", b"\rNTE|")
    with pytest.raises(Refused, match="no OBR segment"):
        read(no_obr)


def test_one_message_may_report_several_exams_each_with_its_own_findings() -> None:
    message = oru() + group("RIS-8", "RID13173^normal^RADLEX", status="P")
    first, second = reports_of(read_message(message), "OBR-18")
    assert (first.accession, first.status) == ("RIS-7", "F")
    assert classes_named(CODES, first.codes) == {"pneumonia"}  # not the second exam's code
    assert (second.accession, second.status, second.final) == ("RIS-8", "P", False)
    assert classes_named(CODES, second.codes) == {"normal"}
    by_orc = reports_of(read_message(message), "ORC-3")  # each group's own ORC
    assert [r.accession for r in by_orc] == ["FL-77", "FL-78"]
    # Two procedures of one exam are one report of it, with the findings of both.
    same = reports_of(read_message(oru() + group("RIS-7", "RID13173^normal^RADLEX")), "OBR-18")
    assert [(r.accession, classes_named(CODES, r.codes)) for r in same] == [
        ("RIS-7", {"pneumonia", "normal"})
    ]
    # An ORC-3 report whose second OBR has no ORC of its own: the one before it applies.
    shared = oru() + group("RIS-8", "RID13173^n^RADLEX").split(b"\r", 1)[1]
    assert [r.accession for r in reports_of(read_message(shared), "ORC-3")] == ["FL-77"]


def test_a_message_with_one_exam_unnamed_is_refused_whole() -> None:
    with pytest.raises(Refused, match="the report has no accession number in OBR-18"):
        reports_of(read_message(oru() + group("", "RID13173^normal^RADLEX")), "OBR-18")
    with pytest.raises(Refused, match="not one DICOM can hold"):
        reports_of(read_message(oru() + group("X" * 17, "RID13173^n^RADLEX")), "OBR-18")
