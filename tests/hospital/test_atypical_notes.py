"""A scan the input check flagged (`models.input_profile`) is noted where a clinician reads the
result: a statement in the SR (and so an NTE of the HL7 message rendered from it), a note on
its FHIR Observation; the validators stay satisfied."""

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


def _sources() -> list[pydicom.Dataset]:
    uid = generate_uid()
    return [in_study(name, uid) for name in SCANS]


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
        path = tmp_path / "sr.dcm"
        sr.save_as(path, enforce_file_format=True)
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert "Error" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr


def test_one_flagged_scan_is_stated_without_its_place() -> None:
    (source,) = _sources()[:1]
    sr = build_sr([source], FLAGGED[1:], MODEL, ReportSettings(disclaimer=None))
    assert statements(sr) == [ATYPICAL_NOTE]


def test_the_fhir_observation_of_a_flagged_scan_carries_the_note() -> None:
    scans = [ScanUIDs("1.2.3", "1.2.3.1", "1.2.3.1.1"), ScanUIDs("1.2.3", "1.2.3.1", "1.2.3.1.2")]
    built = build_bundle(scans, FLAGGED, MODEL, ReportSettings())
    bundle = Bundle.model_validate_json(built.model_dump_json())
    first, second = [e.resource for e in bundle.entry if isinstance(e.resource, Observation)]
    assert first.note is None
    assert [n.text for n in second.note] == [ATYPICAL_NOTE]
