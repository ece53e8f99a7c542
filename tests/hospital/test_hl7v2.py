"""HL7 v2 ORU^R01 rendered from the SR of real X-ray DICOM fixtures: valid against the 2.5.1
message structure (hl7apy, strict), read back by a second implementation (python-hl7), and
in agreement with the SR it renders."""

from __future__ import annotations

import hl7
import pydicom
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from models.card import ClassCode
from service.hospital.hl7v2 import Envelope, build_oru, control_id, parse_ack
from service.hospital.results import ModelIdentity, ReportSettings, ScanResult
from service.hospital.sr import build_sr
from service.hospital.sr_findings import NotReportable, read_findings
from tests.hospital.conftest import SCANS, in_study

PNEUMONIA = ClassCode(scheme="SCT", value="233604007", meaning="Pneumonia")
MODEL = ModelIdentity("chest-xray", 3, "ab" * 32, ("normal", "pneumonia"), (
    ClassCode(scheme="99SCANTUNE", value="normal", meaning="normal"), PNEUMONIA))  # fmt: skip
RESULTS = [
    ScanResult("normal", {"normal": 0.8125, "pneumonia": 0.1875}),
    ScanResult("pneumonia", {"normal": 1e-7, "pneumonia": 0.9999999}),
]


def _sources(**extra: str) -> list[pydicom.Dataset]:
    uid = pydicom.uid.generate_uid()
    return [in_study(name, uid, **extra) for name in SCANS]


def _sr(
    sources: list[pydicom.Dataset], disclaimer: str | None = "Not for diagnosis."
) -> pydicom.Dataset:
    return build_sr(sources, RESULTS, MODEL, ReportSettings(disclaimer=disclaimer))


def _strict(er7: str) -> Message:
    """Parsed against the 2.5.1 ORU^R01 structure, every rule checked (raises otherwise)."""
    message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    assert message.validate()
    return message


def test_the_message_is_valid_oru_r01_and_says_what_the_sr_says() -> None:
    sources = _sources(PatientSex="F", PatientBirthDate="19700101")
    sr = _sr(sources)
    envelope = Envelope(receiving_application="RIS", receiving_facility="HOSP", processing_id="T")
    er7 = build_oru(sr, envelope)
    assert er7.endswith("\r") and "\n" not in er7
    _strict(er7)
    msg = hl7.parse(er7)
    msh, pid, obr = (msg.segment(name) for name in ("MSH", "PID", "OBR"))
    assert str(msh[9]) == "ORU^R01^ORU_R01" and str(msh[12]) == "2.5.1"
    assert (str(msh[5]), str(msh[6]), str(msh[11])) == ("RIS", "HOSP", "T")
    assert str(msh[10]) == control_id(sr)
    assert str(msg["PID.F3.R1.C1"]) == str(sources[0].PatientID)
    assert str(pid[5]) == str(sources[0].PatientName)  # DICOM PN, HL7 XPN: same order
    assert (str(pid[7]), str(pid[8])) == ("19700101", "F")
    assert str(obr[3]) == str(obr[18]) == "A1"  # the accession number
    assert str(obr[7]) == "20260101101500" and str(obr[25]) == "P"
    assert str(msg.segment("NTE")[3]) == "Not for diagnosis."
    rows = [(str(s[2]), str(s[3][0][0]), str(s[4]), str(s[5])) for s in msg.segments("OBX")]
    assert rows[0] == ("ST", "110180", "", str(sources[0].StudyInstanceUID))
    assert rows[1:] == [
        ("CWE", "121071", "1", "normal^normal^99SCANTUNE"),
        ("NM", "PROB", "1", "0.8125"),
        ("ST", "121112", "1", str(sources[0].SOPInstanceUID)),
        ("CWE", "121071", "2", "233604007^Pneumonia^SCT"),
        ("NM", "PROB", "2", "0.9999999"),  # positional, never 1e-07 style
        ("ST", "121112", "2", str(sources[1].SOPInstanceUID)),
    ]
    assert {str(s[11]) for s in msg.segments("OBX")} == {"P"}
    assert {str(s[18]) for s in msg.segments("OBX")} == {"chest-xray version 3^SCANTUNE"}
    assert [f.probability for f in read_findings(sr)] == [0.8125, 0.9999999]


def test_delimiters_in_patient_data_are_escaped_not_obeyed() -> None:
    name = "Ev|il&x~y^Mü^ller"  # every HL7 delimiter but the escape (a DICOM PN cannot hold it)
    sr = _sr(_sources(PatientName=name, AccessionNumber="A|9^&~", IssuerOfPatientID="H&1"))
    er7 = build_oru(sr, Envelope(sending_facility="Ward\\7|x"))
    _strict(er7)
    msg = hl7.parse(er7)
    assert len(msg.segments("PID")) == 1 and len(msg.segment("PID")) == 9  # no field injected
    family, given, middle = (msg.unescape(str(msg[f"PID.F5.R1.C{i}"])) for i in (1, 2, 3))
    assert (family, given, middle) == ("Ev|il&x~y", "Mü", "ller")
    assert msg.unescape(str(msg.segment("OBR")[3])) == "A|9^&~"
    assert msg.unescape(str(msg["PID.F3.R1.C4"])) == "H&1"
    assert msg.unescape(str(msg.segment("MSH")[4])) == "Ward\\7|x"


def test_a_statement_turned_off_gives_no_note_and_resending_keeps_the_control_id() -> None:
    sr = _sr(_sources(), disclaimer=None)
    first, again = build_oru(sr), build_oru(sr)
    assert "\rNTE|" not in first
    assert hl7.parse(first).segment("MSH")[10] == hl7.parse(again).segment("MSH")[10]
    assert control_id(_sr(_sources())) != control_id(sr)


def test_no_patient_id_no_message() -> None:
    sr = _sr(_sources(PatientID=""))
    with pytest.raises(NotReportable, match="no Patient ID"):
        build_oru(sr)


@pytest.mark.parametrize(
    ("ack", "code", "control"),
    [
        (b"MSH|^~\\&|RIS||SCANTUNE||20260101||ACK^R01^ACK|9|P|2.5.1\rMSA|AA|C1\r", "AA", "C1"),
        (b"MSH|^~\\&|RIS|||||ACK|9|P|2.3\rMSA|AE|C2|bad\rERR|^^^207\r", "AE", "C2"),
        (b"MSH|^~\\&|RIS|||||ACK|9|P|2.5\nMSA|CA|C3\n", "CA", "C3"),  # LF-separated, enhanced
    ],
)
def test_acks_are_read_whatever_their_version(ack: bytes, code: str, control: str) -> None:
    got = parse_ack(ack)
    assert (got.code, got.control_id) == (code, control)
    assert got.accepted == (code in {"AA", "CA"})


def test_an_answer_without_msa_is_not_an_ack() -> None:
    with pytest.raises(ValueError, match="no MSA"):
        parse_ack(b"MSH|^~\\&|RIS|||||ACK|9|P|2.5.1\r")


def test_maps_go_as_ed_within_the_receivers_cap_or_not_at_all() -> None:
    import numpy as np

    from service.hospital.attention_map import LONGEST_SIDE, blend, build_attention_map

    sources = _sources()
    sr = _sr(sources)
    grain = np.random.default_rng(1).random((LONGEST_SIDE, LONGEST_SIDE), dtype=np.float32)
    levels = np.zeros((LONGEST_SIDE, LONGEST_SIDE), dtype=np.uint8)
    settings = ReportSettings(uid_root="1.2.826.0.1.99")
    maps = [
        build_attention_map(source, blend(grain, levels), result, MODEL,
                            (pydicom.uid.generate_uid(), pydicom.uid.generate_uid()), i, settings)
        for i, (source, result) in enumerate(zip(sources, RESULTS, strict=True), start=2)
    ]  # fmt: skip

    def ed_values(er7: str) -> list[str]:
        return [str(s[5]) for s in hl7.parse(er7).segments("OBX") if str(s[2]) == "ED"]

    whole = ed_values(build_oru(sr, Envelope(), maps))
    assert len(whole) == 2 and min(len(v) for v in whole) > 100_000
    capped = build_oru(sr, Envelope(), maps, map_max_bytes=30_000)  # (hl7apy's strict rules
    # cap ED's data component at 199 characters, which no picture fits: parsed by hl7 here)
    assert len(ed_values(capped)) == 2 and max(len(v) for v in ed_values(capped)) <= 30_000
    assert ed_values(build_oru(sr, Envelope(), maps, map_max_bytes=200)) == []  # findings alone
