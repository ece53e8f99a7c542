"""The SR builder against the DICOM validators: dciodvfy (errors) and dsrdump (renders)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from models.card import ClassCode
from service.errors import Unprocessable
from service.hospital.results import ModelIdentity, ReportSettings, ScanResult
from service.hospital.sr import build_sr
from tests.hospital.conftest import SCANS, in_study

PNEUMONIA = ClassCode(scheme="SCT", value="233604007", meaning="Pneumonia")
MODEL = ModelIdentity(
    "chest-xray", 3, "ab" * 32, ("normal", "pneumonia"),
    (ClassCode(scheme="99SCANTUNE", value="normal", meaning="normal"), PNEUMONIA),
)  # fmt: skip
RESULTS = [
    ScanResult("normal", {"normal": 0.75, "pneumonia": 0.25}),
    ScanResult("pneumonia", {"normal": 0.125, "pneumonia": 0.875}),
]
needs_tools = pytest.mark.skipif(
    not (shutil.which("dciodvfy") and shutil.which("dsrdump")),
    reason="dicom3tools and dcmtk are installed by .ci/run",
)


def _sources(study_uid: str | None = None) -> list[pydicom.Dataset]:
    uid = study_uid or generate_uid()
    return [in_study(name, uid) for name in SCANS]


def test_the_report_sits_in_the_source_study_and_references_each_scan() -> None:
    sources = _sources()
    sr = build_sr(sources, RESULTS, MODEL, ReportSettings(uid_root="1.2.826.0.1.99"))
    assert sr.StudyInstanceUID == sources[0].StudyInstanceUID
    assert sr.PatientID == "FIXTURE-0001" and sr.AccessionNumber == "A1"
    assert sr.SOPInstanceUID.startswith("1.2.826.0.1.99.")
    assert sr.SeriesInstanceUID.startswith("1.2.826.0.1.99.")
    assert sr.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    referenced = {i.ReferencedSOPInstanceUID for s in evidence for i in s.ReferencedSOPSequence}
    assert referenced == {s.SOPInstanceUID for s in sources}
    assert sr.PreliminaryFlag == "PRELIMINARY" and sr.VerificationFlag == "UNVERIFIED"


def test_sources_from_two_studies_are_refused() -> None:
    sources = [*_sources()[:1], *_sources()[1:]]
    with pytest.raises(Unprocessable, match="2 studies"):
        build_sr(sources, RESULTS, MODEL, ReportSettings())


def test_a_source_without_uids_is_refused() -> None:
    sources = _sources()
    del sources[1].SOPInstanceUID
    with pytest.raises(Unprocessable, match="scan 2 has no SOPInstanceUID"):
        build_sr(sources, RESULTS, MODEL, ReportSettings())


@needs_tools
@pytest.mark.parametrize("disclaimer", [ReportSettings().disclaimer, None])
def test_validators_find_no_error_and_dsrdump_shows_the_findings(
    tmp_path: Path, disclaimer: str | None
) -> None:
    sr = build_sr(_sources(), RESULTS, MODEL, ReportSettings(disclaimer=disclaimer))
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    report = checked.stdout + checked.stderr
    assert "Error" not in report, report
    dump = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, check=True)
    assert '(233604007,SCT,"Pneumonia")' in dump.stdout
    assert '"Calibrated probability of the finding")="0.875"' in dump.stdout
    assert '"Algorithm Version")="3"' in dump.stdout
    assert ("not for diagnostic use" in dump.stdout) is (disclaimer is not None)


def test_the_probability_is_the_results_own() -> None:
    import highdicom as hd
    from highdicom.sr.utils import find_content_items
    from pydicom.sr.codedict import codes

    sr = build_sr(_sources(), RESULTS, MODEL, ReportSettings())
    report = hd.sr.ComprehensiveSR.from_dataset(sr)
    groups = report.content.get_image_measurement_groups()
    values = [g.get_measurements()[0].value for g in groups]
    findings = [
        find_content_items(g[0], name=codes.DCM.Finding)[0].ConceptCodeSequence[0].CodeValue
        for g in groups
    ]
    assert values == [0.75, 0.875]
    assert findings == ["normal", "233604007"]


@needs_tools
def test_long_class_names_and_codes_stay_valid(tmp_path: Path) -> None:
    """Code Value is 16 characters at most: longer ones go in Long Code Value."""
    name = "bacterial_pneumonia_lobar"
    model = ModelIdentity(
        "m", 1, "cd" * 32, ("normal", name),
        (MODEL.codes[0], ClassCode(scheme="99SCANTUNE", value=name, meaning=name)),
    )  # fmt: skip
    results = [ScanResult(name, {"normal": 0.25, name: 0.75})] * 2
    sr = build_sr(_sources(), results, model, ReportSettings(disclaimer="x" * 100))
    assert sr.SeriesDescription == "Automated algorithm result; not for diagnostic use"
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    assert "Error" not in checked.stdout + checked.stderr
    dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=True)
    assert f'"Finding")=({name},99SCANTUNE,"{name}")' in dump.stdout


def test_a_header_highdicom_refuses_is_a_422_without_its_value() -> None:
    """pydicom and highdicom put values (a patient's name) in their errors: none may leave."""
    from service.hospital.answers import _report

    sources = _sources()
    sources[0].SOPClassUID = "Smith^John"  # not a UID: highdicom refuses it, naming it
    with pytest.raises(Unprocessable) as refused:
        _report(sources, RESULTS, MODEL, ReportSettings())
    assert "Smith" not in refused.value.detail


def _device_uids(sr: pydicom.Dataset) -> set[str]:
    """The Device Observer UIDs (121012, DCM) anywhere in the SR's content tree."""
    found: set[str] = set()

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            name = item.get("ConceptNameCodeSequence")
            if name and name[0].CodeValue == "121012":
                found.add(str(item.UID))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


@pytest.mark.parametrize("root", [None, "1.2.826.0.1.99"])
def test_the_model_s_device_uid_is_the_same_in_every_report(root: str | None) -> None:
    """The model as an observer device: one UID for it, with a UID root or without (a random
    2.25 UID each time would make a PACS see a new device in every report)."""
    settings = ReportSettings(uid_root=root)
    first = _device_uids(build_sr(_sources(), RESULTS, MODEL, settings))
    again = _device_uids(build_sr(_sources(), RESULTS, MODEL, settings))
    assert len(first) == 1 and first == again
    assert next(iter(first)).startswith(f"{root}." if root else "2.25.")
