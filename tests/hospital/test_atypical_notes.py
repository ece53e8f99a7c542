"""A scan the input check flagged (`models.input_profile`) is noted where a clinician reads the
result, tied to that scan: a statement in the scan's measurement group of the SR, beside the
reference to its image; in the HL7 message rendered from it, an NTE on the scan's finding OBX;
a note on the scan's FHIR Observation, in the predict's Bundle and in the node's transaction
(and its withdrawal). The validators stay satisfied."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import hl7
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from pydicom.uid import generate_uid

from service.hospital.fhir import build_bundle
from service.hospital.fhir_transaction import transaction_from_sr, withdrawal_from_sr
from service.hospital.hl7_withdrawal import build_withdrawal
from service.hospital.hl7v2 import build_oru
from service.hospital.results import ATYPICAL_NOTE, ReportSettings, ScanResult, ScanUIDs
from service.hospital.sr import build_sr
from service.hospital.sr_findings import statements
from tests.hospital.conftest import SCANS, in_study
from tests.hospital.test_hl7_withdrawal import maps_of
from tests.hospital.test_hl7v2 import _strict
from tests.hospital.test_sr import MODEL, RESULTS

FLAGGED = [replace(RESULTS[0], typical=True), replace(RESULTS[1], typical=False)]
GROUP, IMAGE, COMMENT = ("125007", "DCM"), ("121112", "DCM"), ("121106", "DCM")
FINDING = "121071"  # DCM "Finding": the OBX an NTE on the scan's result follows


def _sources(names: tuple[str, ...] = SCANS) -> list[pydicom.Dataset]:
    uid = generate_uid()
    return [in_study(name, uid) for name in names]


def _concept(item: pydicom.Dataset) -> tuple[str, str]:
    name = item.ConceptNameCodeSequence[0]
    return str(name.CodeValue), str(name.CodingSchemeDesignator)


def _groups(item: pydicom.Dataset) -> list[pydicom.Dataset]:
    """The measurement groups anywhere below `item`, in document order."""
    found = []
    for child in item.get("ContentSequence", []):
        found.extend([child] if _concept(child) == GROUP else _groups(child))
    return found


def _comments_by_image(sr: pydicom.Dataset) -> dict[str, list[str]]:
    """Each measurement group's comments, keyed by the SOP Instance UID of its IMAGE item."""
    by_image = {}
    for group in _groups(sr):
        items = group.ContentSequence
        (image,) = [i for i in items if i.ValueType == "IMAGE" and _concept(i) == IMAGE]
        uid = str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        by_image[uid] = [str(i.TextValue) for i in items if _concept(i) == COMMENT]
    return by_image


def _middle_flagged() -> tuple[list[pydicom.Dataset], list[ScanResult], pydicom.Dataset]:
    """Three scans of a study, the second one flagged: their sources, results and SR."""
    sources = _sources((*SCANS, SCANS[0]))
    results = [replace(RESULTS[i % 2], typical=i != 1) for i in range(3)]
    return sources, results, build_sr(sources, results, MODEL, ReportSettings())


def _hl7_notes(er7: str) -> dict[str, list[str]]:
    """The message's NTE texts by what they annotate, the segment they follow (python-hl7):
    "order" (the OBR), or an OBX as "<sub-ID> <identifier code>" (only those with notes)."""
    found: dict[str, list[str]] = {"order": []}
    owner = "order"
    for segment in hl7.parse(er7):
        if str(segment[0]) == "OBX":
            owner = f"{segment[4]} {str(segment[3]).split('^')[0]}"
        elif str(segment[0]) == "NTE":
            found.setdefault(owner, []).append(str(segment[3]))
    return found


def _strict_notes(er7: str) -> dict[str, list[str]]:
    """As `_hl7_notes`, read from the groups of the 2.5.1 ORU^R01 structure (hl7apy, strict:
    no maps, whose ED values its rules cap at 199 characters): the order's NTEs, and each
    observation group's, under its OBX."""
    order = _strict(er7).oru_r01_patient_result.oru_r01_order_observation
    found = {"order": [n.nte_3.value for n in order.children if n.name == "NTE"]}
    for group in order.oru_r01_observation:
        notes = [n.nte_3.value for n in group.children if n.name == "NTE"]
        if notes:
            found[f"{group.obx.obx_4.value} {group.obx.obx_3.value.split('^')[0]}"] = notes
    return found


def _observation_notes(bundle: Bundle) -> dict[str, list[str]]:
    """Each Observation's notes, keyed by the SOP Instance UID of the scan it derives from."""
    bundle = Bundle.model_validate_json(bundle.model_dump_json())  # as a server reads it
    return {
        o.derivedFrom[0].display.removeprefix("SOP Instance UID "): [n.text for n in o.note or []]
        for o in (e.resource for e in bundle.entry)
        if isinstance(o, Observation)
    }


def _dciodvfy_errors(sr: pydicom.Dataset, path: Path) -> str:
    sr.save_as(path, enforce_file_format=True)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    report = checked.stdout + checked.stderr
    return report if "Error" in report else ""


def test_the_prediction_s_check_reaches_the_result() -> None:
    answer = {"label": "normal", "probabilities": {"normal": 0.9, "pneumonia": 0.1}}
    assert ScanResult.from_prediction(answer).typical is None
    checked = {**answer, "input_check": {"typical": False, "score": 3.0, "limit": 1.2}}
    assert ScanResult.from_prediction(checked).typical is False


@pytest.mark.parametrize("disclaimer", [ReportSettings().disclaimer, None])
def test_the_sr_and_its_hl7_message_state_which_scan_is_unlike_the_training_scans(
    tmp_path: Path, disclaimer: str | None
) -> None:
    sr = build_sr(_sources(), FLAGGED, MODEL, ReportSettings(disclaimer=disclaimer))
    note = f"Scan 2 of 2: {ATYPICAL_NOTE}"
    assert statements(sr) == [s for s in (disclaimer, note) if s]
    assert statements(build_sr(_sources(), RESULTS, MODEL, ReportSettings(disclaimer=None))) == []
    er7, order = build_oru(sr), [disclaimer] if disclaimer else []
    assert _strict_notes(er7) == {"order": order, f"2 {FINDING}": [ATYPICAL_NOTE]}
    if shutil.which("dciodvfy"):
        assert not _dciodvfy_errors(sr, tmp_path / "sr.dcm")


@pytest.mark.parametrize("flagged", [(2,), (1, 3)])
def test_each_flagged_scan_s_statement_references_its_own_image(
    tmp_path: Path, flagged: tuple[int, ...]
) -> None:
    sources = _sources((*SCANS, SCANS[0]))
    results = [replace(RESULTS[i % 2], typical=i + 1 not in flagged) for i in range(3)]
    sr = build_sr(sources, results, MODEL, ReportSettings())
    uids = [str(s.SOPInstanceUID) for s in sources]
    assert _comments_by_image(sr) == {
        uid: [ATYPICAL_NOTE] if i in flagged else [] for i, uid in enumerate(uids, start=1)
    }
    # formats without a place per scan name it by its place, as the HL7 OBX sub-IDs do
    named = [f"Scan {i} of 3: {ATYPICAL_NOTE}" for i in flagged]
    assert statements(sr) == [ReportSettings().disclaimer, *named]
    er7, on_findings = build_oru(sr), {f"{i} {FINDING}": [ATYPICAL_NOTE] for i in flagged}
    expected = {"order": [ReportSettings().disclaimer], **on_findings}
    assert _strict_notes(er7) == _hl7_notes(er7) == expected
    if shutil.which("dciodvfy"):
        assert not _dciodvfy_errors(sr, tmp_path / "sr.dcm")


def test_the_report_wide_container_holds_only_the_disclaimer() -> None:
    sr = build_sr(_sources(), FLAGGED, MODEL, ReportSettings())
    outside = [i for i in sr.ContentSequence if "ContentSequence" in i and not _groups(i)]
    texts = [str(c.TextValue) for i in outside for c in i.ContentSequence if "TextValue" in c]
    assert texts == [ReportSettings().disclaimer]


def test_one_flagged_scan_is_stated_without_its_place(tmp_path: Path) -> None:
    (source,) = _sources()[:1]
    sr = build_sr([source], FLAGGED[1:], MODEL, ReportSettings(disclaimer=None))
    assert statements(sr) == [ATYPICAL_NOTE]
    assert _comments_by_image(sr) == {str(source.SOPInstanceUID): [ATYPICAL_NOTE]}
    assert _strict_notes(build_oru(sr)) == {"order": [], f"1 {FINDING}": [ATYPICAL_NOTE]}
    if shutil.which("dciodvfy"):
        assert not _dciodvfy_errors(sr, tmp_path / "sr.dcm")


def test_the_fhir_observation_of_a_flagged_scan_carries_the_note() -> None:
    scans = [ScanUIDs("1.2.3", "1.2.3.1", "1.2.3.1.1"), ScanUIDs("1.2.3", "1.2.3.1", "1.2.3.1.2")]
    built = build_bundle(scans, FLAGGED, MODEL, ReportSettings())
    bundle = Bundle.model_validate_json(built.model_dump_json())
    first, second = [e.resource for e in bundle.entry if isinstance(e.resource, Observation)]
    assert first.note is None
    assert [n.text for n in second.note] == [ATYPICAL_NOTE]


@pytest.mark.parametrize("with_maps", [False, True])
def test_the_hl7_note_follows_the_flagged_scan_s_finding_and_stays_in_its_withdrawal(
    with_maps: bool,
) -> None:
    sources, results, sr = _middle_flagged()
    maps = maps_of(sources, results) if with_maps else []  # one more OBX (ED) per scan
    disclaimer = ReportSettings().disclaimer
    original = build_oru(sr, maps=maps)
    expected = {"order": [disclaimer], f"2 {FINDING}": [ATYPICAL_NOTE]}
    assert _hl7_notes(original) == expected
    segments = list(hl7.parse(original))
    at = [str(s[0]) for s in segments].index("NTE", 5)  # the first NTE after the order's
    finding = segments[at - 1]  # what an NTE annotates: the OBX just before it
    assert (str(finding[4]), str(finding[5])) == ("2", "233604007^Pneumonia^SCT")
    withdrawal = build_withdrawal(sr, reason="recall", maps=maps)
    voided = {"order": ["Withdrawn: recall", disclaimer], f"2 {FINDING}": [ATYPICAL_NOTE]}
    assert _hl7_notes(withdrawal) == voided
    if not with_maps:
        assert _strict_notes(original) == expected and _strict_notes(withdrawal) == voided


def test_the_node_s_fhir_transaction_notes_the_flagged_scan_on_its_own_observation() -> None:
    sources, _, sr = _middle_flagged()
    bundle = transaction_from_sr(sr)
    uids = [str(s.SOPInstanceUID) for s in sources]
    assert _observation_notes(bundle) == {
        uid: [ATYPICAL_NOTE] if i == 1 else [] for i, uid in enumerate(uids)
    }
    conclusion = bundle.entry[0].resource.conclusion
    assert ReportSettings().disclaimer in conclusion and "unlike" not in conclusion


def test_the_node_s_fhir_withdrawal_keeps_the_flagged_scan_s_note_after_the_reason() -> None:
    sources, _, sr = _middle_flagged()
    bundle = withdrawal_from_sr(sr, reason="recall")
    uids = [str(s.SOPInstanceUID) for s in sources]
    assert _observation_notes(bundle) == {
        uid: ["Withdrawn: recall", *([ATYPICAL_NOTE] if i == 1 else [])]
        for i, uid in enumerate(uids)
    }
    assert "unlike" not in bundle.entry[0].resource.conclusion
