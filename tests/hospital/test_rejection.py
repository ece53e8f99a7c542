"""The IOCM rejection note of a recalled model's SR and attention maps, built from real fixture
scans: dciodvfy (dicom3tools) finds no error in it, it references exactly what it voids, in the
SR's study, and a resend is the same instance."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from models import scans
from service.hospital.attention_map import blend, build_attention_map
from service.hospital.rejection import build_rejection_note, rejection_uids
from service.hospital.results import ReportSettings
from service.hospital.sr import build_sr
from service.hospital.sr_findings import NotReportable
from tests.hospital.conftest import IMAGES, SCANS, in_study
from tests.hospital.test_sr import MODEL, RESULTS

KOS_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
ROOT = "1.2.826.0.1.99"
SETTINGS = ReportSettings(uid_root=ROOT)
TIMESTAMPS = ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime")


def sr_and_maps() -> tuple[pydicom.Dataset, list[pydicom.Dataset]]:
    """An SR of the two fixture scans, and each scan's attention map in a series of its own."""
    study_uid = generate_uid()
    sources = [in_study(name, study_uid) for name in SCANS]
    sr = build_sr(sources, RESULTS, MODEL, SETTINGS)
    maps_series = generate_uid()
    maps = []
    for i, (name, source, result) in enumerate(zip(SCANS, sources, RESULTS, strict=True)):
        scan = scans.decode((IMAGES / name).read_bytes())
        pixels = blend(scan, np.full(scan.shape[:2], 128, dtype=np.uint8))
        uids = (maps_series, generate_uid())
        maps.append(build_attention_map(source, pixels, result, MODEL, uids, i + 1, SETTINGS))
    return sr, maps


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def references(note: pydicom.Dataset) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(SOP class, instance) pairs in the evidence sequence and in the content tree."""
    evidence = {
        (str(sop.ReferencedSOPClassUID), str(sop.ReferencedSOPInstanceUID))
        for study in note.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    content = {
        (str(ref.ReferencedSOPClassUID), str(ref.ReferencedSOPInstanceUID))
        for item in note.ContentSequence
        for ref in item.get("ReferencedSOPSequence", [])
    }
    return evidence, content


def description(note: pydicom.Dataset) -> list[str]:
    return [
        str(item.TextValue)
        for item in note.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "113012"
    ]


@pytest.mark.skipif(not shutil.which("dciodvfy"), reason="dicom3tools is installed by .ci/run")
def test_dciodvfy_finds_no_error_in_the_note_of_an_sr_with_maps(tmp_path: Path) -> None:
    sr, maps = sr_and_maps()
    path = tmp_path / "note.dcm"
    path.write_bytes(build_rejection_note(sr, maps, "chest-xray 3 recalled", ROOT))
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    report = checked.stdout + checked.stderr
    assert [line for line in report.splitlines() if line.startswith("Error")] == [], report
    assert "KeyObjectSelectionDocument" in report  # dciodvfy read it as a KOS


def test_the_note_voids_exactly_the_sr_and_its_maps_in_their_study() -> None:
    sr, maps = sr_and_maps()
    note = read(build_rejection_note(sr, maps, uid_root=ROOT))
    assert note.SOPClassUID == KOS_STORAGE and note.Modality == "KO"
    title = note.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator) == ("113037", "DCM")
    assert title.CodeMeaning == "Rejected for Patient Safety Reasons"
    expected = {(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in [sr, *maps]}
    evidence, content = references(note)
    assert evidence == content == expected
    study = note.CurrentRequestedProcedureEvidenceSequence
    assert [s.StudyInstanceUID for s in study] == [sr.StudyInstanceUID]
    assert note.StudyInstanceUID == sr.StudyInstanceUID
    assert (note.PatientID, note.PatientName) == (sr.PatientID, sr.PatientName)
    assert (note.AccessionNumber, note.StudyID) == (sr.AccessionNumber, sr.StudyID)
    assert note.Manufacturer == sr.Manufacturer
    assert note.SeriesInstanceUID not in {sr.SeriesInstanceUID, maps[0].SeriesInstanceUID}


def test_an_sr_without_maps_is_voided_alone() -> None:
    sr, _ = sr_and_maps()
    evidence, content = references(read(build_rejection_note(sr, uid_root=ROOT)))
    assert evidence == content == {(str(sr.SOPClassUID), str(sr.SOPInstanceUID))}


@pytest.mark.parametrize("root", [ROOT, None])
def test_a_resend_is_the_same_instance_and_another_sr_gets_another(root: str | None) -> None:
    """Without a UID root too: sr.new_uid makes random 2.25 UIDs there, whatever the entropy."""
    sr, maps = sr_and_maps()
    first, again = (read(build_rejection_note(sr, maps, "recalled", root)) for _ in range(2))
    uids = (first.SeriesInstanceUID, first.SOPInstanceUID)
    assert uids == (again.SeriesInstanceUID, again.SOPInstanceUID) == rejection_uids(sr, root)
    assert first.SOPInstanceUID != sr.SOPInstanceUID
    assert first.SOPInstanceUID != first.SeriesInstanceUID
    other, _ = sr_and_maps()
    assert set(rejection_uids(other, root)).isdisjoint(uids)
    if root:
        assert all(uid.startswith(f"{root}.") for uid in uids)
    for note in (first, again):  # timestamps aside, the same bytes
        for keyword in TIMESTAMPS:
            delattr(note, keyword)
        del note.ContributingEquipmentSequence[0].ContributionDateTime
    assert first == again


def test_the_reason_is_the_key_object_description_and_none_gives_none() -> None:
    sr, maps = sr_and_maps()
    reason = "Modell chest-xray 3 zurückgerufen: Sensitivität unter Spezifikation"
    note = read(build_rejection_note(sr, maps, f"  {reason}\n", ROOT))
    assert description(note) == [reason]  # non-ASCII survives: written as UTF-8
    assert description(read(build_rejection_note(sr, maps, uid_root=ROOT))) == []


def test_an_sr_without_a_study_or_a_map_of_another_study_is_not_reportable() -> None:
    sr, maps = sr_and_maps()
    stray = in_study(SCANS[0], generate_uid())
    with pytest.raises(NotReportable, match="map 2 is of another study"):
        build_rejection_note(sr, [maps[0], stray], uid_root=ROOT)
    del sr.StudyInstanceUID
    with pytest.raises(NotReportable, match="no StudyInstanceUID"):
        build_rejection_note(sr, maps, uid_root=ROOT)
    del sr.SOPInstanceUID
    with pytest.raises(NotReportable, match="no SOPInstanceUID"):
        rejection_uids(sr)
