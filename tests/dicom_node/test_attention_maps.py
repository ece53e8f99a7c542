"""Attention maps end to end: a destination with `attention_maps: true` gets, with the SR,
each classified scan under the model's class activation map as a Secondary Capture, over
C-STORE (Orthanc) and STOW-RS (a second Orthanc's DICOMweb); the maps are made from the real
inference service's maps, valid for dciodvfy, and leave nothing in the spool or the log."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset

from tests.dicom_node.parts import PACS_AE, Gunicorn, Orthanc, make_study, send, wait_until
from tests.dicom_node.test_e2e import QUIET_S, SLACK_S

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def maps_of(pacs: Orthanc, study: list[Dataset]) -> list[Dataset]:
    uid = study[0].StudyInstanceUID
    found: list[Dataset] = wait_until(
        lambda: len(pacs.instances(uid, "OT")) == len(study) and pacs.instances(uid, "OT"),
        QUIET_S + SLACK_S,
        "the maps reach the PACS",
    )
    return sorted(found, key=lambda ds: int(ds.InstanceNumber))


def test_a_destination_that_takes_maps_gets_one_per_scan_beside_the_sr(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, node_dicom_port: int, tmp_path: Path
) -> None:
    archive = Orthanc(tmp_path / "archive", node_dicom_port).start()
    try:
        destinations = [
            {"ae_title": PACS_AE, "host": "127.0.0.1", "port": orthanc.dicom_port,
             "attention_maps": True},
            {"stow_url": f"{archive.url}/dicom-web", "attention_maps": True},
        ]  # fmt: skip
        node = make_node(dicom_destinations=destinations).start()
        study = make_study(3)
        assert send(node.port_dicom, study) == [0, 0, 0]
        by_cstore, by_stow = maps_of(orthanc, study), maps_of(archive, study)
        assert len(archive.reports(study[0].StudyInstanceUID)) == 1
    finally:
        archive.stop()
    [sr] = orthanc.reports(study[0].StudyInstanceUID)
    assert [m.SOPInstanceUID for m in by_cstore] == [m.SOPInstanceUID for m in by_stow]
    sources = {ds.SOPInstanceUID: ds for ds in study}
    for number, image in enumerate(by_cstore, start=1):
        assert image.SOPClassUID == SC_STORAGE and image.InstanceNumber == number
        assert image.StudyInstanceUID == study[0].StudyInstanceUID
        assert image.SeriesInstanceUID not in {sr.SeriesInstanceUID, study[0].SeriesInstanceUID}
        source = sources[image.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert image.pixel_array.shape == (source.Rows, source.Columns, 3)
        assert image.PatientID == "P-1"
        assert "chest-xray 1:" in image.DerivationDescription
    assert len({m.SeriesInstanceUID for m in by_cstore}) == 1
    assert {m.SourceImageSequence[0].ReferencedSOPInstanceUID for m in by_cstore} == set(sources)
    path = tmp_path / "map.dcm"
    by_cstore[0].save_as(path, enforce_file_format=True)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    assert [line for line in checked.stderr.splitlines() if "Error" in line] == []

    wait_until(lambda: node.metric("scantune_dicom_queue_depth") == 0, SLACK_S, "all delivered")
    assert node.metric("scantune_dicom_attention_maps_total", outcome="made") == 3
    assert node.metric("scantune_dicom_attention_maps_total", outcome="none") == 0
    assert not list((node.root.parent / "spool").iterdir()), "delivered files are kept"
    log = node.log_text()
    for private in ("P-1", study[0].StudyInstanceUID, by_cstore[0].SOPInstanceUID):
        assert private not in log


def test_a_destination_that_does_not_ask_for_maps_gets_the_report_alone(
    node: Gunicorn, orthanc: Orthanc
) -> None:
    study = make_study(2)
    assert send(node.port_dicom, study) == [0, 0]
    uid = study[0].StudyInstanceUID
    wait_until(lambda: orthanc.reports(uid), QUIET_S + SLACK_S, "the SR reaches Orthanc")
    wait_until(lambda: node.metric("scantune_dicom_queue_depth") == 0, SLACK_S, "delivered")
    assert orthanc.instances(uid, "OT") == []
    assert node.metric("scantune_dicom_attention_maps_total", outcome="made") == 0
