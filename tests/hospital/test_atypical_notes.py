"""A scan the input check flagged (`models.input_profile`) is noted where a clinician reads the
result: a statement in the scan's measurement group of the SR, beside the reference to its
image (and so an NTE of the HL7 message rendered from it), a note on its FHIR Observation; the
validators stay satisfied."""

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
from service.hospital.hl7v2 import build_oru
from service.hospital.results import ATYPICAL_NOTE, ReportSettings, ScanResult, ScanUIDs
from service.hospital.sr import build_sr
from service.hospital.sr_findings import statements
from tests.hospital.conftest import SCANS, in_study
from tests.hospital.test_sr import MODEL, RESULTS

FLAGGED = [replace(RESULTS[0], typical=True), replace(RESULTS[1], typical=False)]
GROUP, IMAGE, COMMENT = ("125007", "DCM"), ("121112", "DCM"), ("121106", "DCM")


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
    notes = [str(s[3]) for s in hl7.parse(build_oru(sr)).segments("NTE")]
    assert notes[-1] == note
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
    assert [str(s[3]) for s in hl7.parse(build_oru(sr)).segments("NTE")][1:] == named
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
    if shutil.which("dciodvfy"):
        assert not _dciodvfy_errors(sr, tmp_path / "sr.dcm")


def test_the_fhir_observation_of_a_flagged_scan_carries_the_note() -> None:
    scans = [ScanUIDs("1.2.3", "1.2.3.1", "1.2.3.1.1"), ScanUIDs("1.2.3", "1.2.3.1", "1.2.3.1.2")]
    built = build_bundle(scans, FLAGGED, MODEL, ReportSettings())
    bundle = Bundle.model_validate_json(built.model_dump_json())
    first, second = [e.resource for e in bundle.entry if isinstance(e.resource, Observation)]
    assert first.note is None
    assert [n.text for n in second.note] == [ATYPICAL_NOTE]
