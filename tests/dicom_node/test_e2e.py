"""The node end to end with real parts: a modality (pynetdicom) or Orthanc sends a study, the
inference service under gunicorn classifies it, and Orthanc receives the structured report."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from pydicom import Dataset
from pynetdicom import AE

from tests.dicom_node.parts import (
    MODALITY_AE,
    NODE_AE,
    Gunicorn,
    Orthanc,
    make_study,
    send,
    store_in_pacs,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
QUIET_S = 2.0  # the node's SCANTUNE_DICOM_SERIES_QUIET_S in these tests
SLACK_S = 15.0  # classification and delivery on a busy 2-core machine


def referenced(sr: Dataset) -> set[str]:
    """The SOP Instance UIDs the SR's evidence lists."""
    return {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }


def dciodvfy_errors(sr: Dataset, folder: Path) -> list[str]:
    """The errors dicom3tools' validator finds in the SR as the PACS holds it."""
    path = folder / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (checked.stdout + checked.stderr).splitlines() if "Error" in line]


def one_report(orthanc: Orthanc, study: list[Dataset], timeout: float) -> Dataset:
    uid = study[0].StudyInstanceUID
    reports = wait_until(lambda: orthanc.reports(uid), timeout, "the SR reaches Orthanc")
    assert len(reports) == 1, f"{len(reports)} results for one study"
    return reports[0]


def test_a_study_comes_back_as_one_sr_referencing_every_instance_and_a_resend_adds_none(
    node: Gunicorn, orthanc: Orthanc
) -> None:
    study = make_study(4)
    assert send(node.port_dicom, study) == [0, 0, 0, 0]
    sent_at = time.monotonic()
    sr = one_report(orthanc, study, QUIET_S + SLACK_S)
    assert time.monotonic() - sent_at >= QUIET_S * 0.9, "classified before the series fell quiet"
    assert sr.StudyInstanceUID == study[0].StudyInstanceUID
    assert sr.PatientID == "P-1"
    assert referenced(sr) == {ds.SOPInstanceUID for ds in study}
    assert sr.SeriesInstanceUID != study[0].SeriesInstanceUID
    assert dciodvfy_errors(sr, node.root) == []

    assert send(node.port_dicom, study) == [0, 0, 0, 0]  # acknowledged, and nothing more
    time.sleep(QUIET_S + 3)
    assert [r.SOPInstanceUID for r in orthanc.reports(study[0].StudyInstanceUID)] == [
        sr.SOPInstanceUID
    ]
    assert node.metric("scantune_dicom_instances_received_total", outcome="duplicate") == 4
    assert node.metric("scantune_dicom_series_classified_total") == 1
    assert node.metric("scantune_dicom_results_delivered_total") == 1
    assert node.metric("scantune_dicom_queue_depth") == 0
    assert not list((node.root.parent / "spool").glob("*.dcm")), "delivered files are kept"
    log = node.log_text()
    assert "classified by chest-xray v1" in log
    for private in ("P-1", "Test^Fixture", study[0].StudyInstanceUID, sr.SOPInstanceUID):
        assert private not in log


def test_a_result_waits_while_the_pacs_is_down_and_is_delivered_once_it_returns(
    node: Gunicorn, orthanc: Orthanc
) -> None:
    study = make_study(3)
    orthanc.stop()
    assert send(node.port_dicom, study) == [0, 0, 0]
    wait_until(
        lambda: node.metric("scantune_dicom_delivery_failures_total") >= 2,
        QUIET_S + SLACK_S,
        "deliveries fail while Orthanc is down",
    )
    assert node.metric("scantune_dicom_series_classified_total") == 1
    assert node.metric("scantune_dicom_queue_depth") == 1
    assert node.metric("scantune_dicom_oldest_pending_seconds") > 0
    orthanc.start()
    sr = one_report(orthanc, study, SLACK_S)
    assert referenced(sr) == {ds.SOPInstanceUID for ds in study}
    wait_until(lambda: node.metric("scantune_dicom_queue_depth") == 0, 5, "the queue empties")
    assert node.metric("scantune_dicom_results_delivered_total") == 1


def test_a_node_killed_mid_series_classifies_and_delivers_the_series_once_after_restart(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, tmp_path: Path
) -> None:
    node = make_node(dicom_series_quiet_s=4).start()
    study = make_study(4)
    assert send(node.port_dicom, study[:2]) == [0, 0]
    node.kill()  # SIGKILL, well inside the quiet period: nothing classified yet
    time.sleep(5)  # down for longer than the quiet period: it starts again after the restart
    node.start()
    assert send(node.port_dicom, study[2:]) == [0, 0]
    sr = one_report(orthanc, study, 4 + SLACK_S)
    assert referenced(sr) == {ds.SOPInstanceUID for ds in study}
    time.sleep(3)
    assert len(orthanc.reports(study[0].StudyInstanceUID)) == 1
    with sqlite3.connect(tmp_path / "node.db") as db:
        assert db.execute("SELECT count(*), min(state) FROM dicom_series").fetchone() == (1, "done")
        assert db.execute(
            "SELECT count(*) FROM dicom_deliveries WHERE state = 'done'"
        ).fetchone() == (1,)
    assert node.metric("scantune_dicom_series_classified_total") == 1


def test_an_unknown_caller_is_rejected_at_association(node: Gunicorn) -> None:
    for ae_title, bind in (("STRANGER", "127.0.0.1"), (MODALITY_AE, "127.0.0.2")):
        ae = AE(ae_title=ae_title)
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", node.port_dicom, ae_title=NODE_AE, bind_address=(bind, 0))
        assert assoc.is_rejected, f"{ae_title} from {bind} was let in"
    assert node.metric("scantune_dicom_associations_rejected_total") == 2
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.port_dicom, ae_title=NODE_AE)
    assert int(assoc.send_c_echo().Status) == 0  # the allowed caller may
    assoc.release()


def test_a_series_no_route_matches_is_acknowledged_dropped_and_counted(
    node: Gunicorn, orthanc: Orthanc
) -> None:
    study = make_study(3, modality="MR")
    assert send(node.port_dicom, study) == [0, 0, 0]
    time.sleep(QUIET_S + 3)
    assert node.metric("scantune_dicom_series_unrouted_total") == 1
    assert node.metric("scantune_dicom_instances_received_total", outcome="unrouted") == 3
    assert node.metric("scantune_dicom_series_classified_total") == 0
    assert orthanc.study_count() == 0
    assert not list((node.root.parent / "spool").iterdir())


def test_the_pacs_routes_a_study_to_the_node_and_stow_rs_clients_send_over_http(
    node: Gunicorn, orthanc: Orthanc
) -> None:
    from dicomweb_client import DICOMwebClient

    from tests.dicom_node.conftest import STOW_KEY

    # Orthanc holds a study and sends it to its "scantune" modality, as a routing rule would.
    pacs_study = make_study(2)
    store_in_pacs(orthanc.url, pacs_study)
    orthanc_id = requests.post(
        f"{orthanc.url}/tools/lookup", data=pacs_study[0].StudyInstanceUID, timeout=10
    ).json()[0]["ID"]
    moved = requests.post(f"{orthanc.url}/modalities/scantune/store", json=[orthanc_id], timeout=30)
    assert moved.ok, moved.text

    stow_study = make_study(3)
    refused = requests.post(f"{node.url}/dicomweb/studies", data=b"", timeout=10)
    assert refused.status_code == 401
    assert refused.headers["Content-Type"] == "application/problem+json"
    client = DICOMwebClient(f"{node.url}/dicomweb", headers={"Authorization": f"Bearer {STOW_KEY}"})
    answer = client.store_instances(stow_study)
    assert [r.ReferencedSOPInstanceUID for r in answer.ReferencedSOPSequence] == [
        ds.SOPInstanceUID for ds in stow_study
    ]
    for study in (pacs_study, stow_study):
        sr = one_report(orthanc, study, QUIET_S + SLACK_S)
        assert referenced(sr) == {ds.SOPInstanceUID for ds in study}
    assert node.metric("scantune_dicom_instances_received_total", via="stow") == 3


def test_results_go_by_stow_rs_with_the_authorization_from_its_file(
    make_node: Callable[..., Gunicorn], tmp_path: Path, node_dicom_port: int
) -> None:
    import base64

    from tests.dicom_node.parts import Orthanc

    pacs = Orthanc(tmp_path / "web-pacs", node_dicom_port, users={"scantune": "s3cret"}).start()
    try:
        secret = tmp_path / "pacs-authorization"
        secret.write_text("Basic " + base64.b64encode(b"scantune:wrong").decode())
        destination = {"stow_url": f"{pacs.url}/dicom-web", "authorization_file": str(secret)}
        node = make_node(dicom_destinations=[destination]).start()
        study = make_study(2)
        assert send(node.port_dicom, study) == [0, 0]
        wait_until(
            lambda: node.metric("scantune_dicom_delivery_failures_total", kind="stow") >= 1,
            QUIET_S + SLACK_S,
            "the wrong password is refused",
        )
        secret.write_text("Basic " + base64.b64encode(b"scantune:s3cret").decode())  # rotated
        sr = one_report(pacs, study, SLACK_S)
        assert referenced(sr) == {ds.SOPInstanceUID for ds in study}
        wait_until(
            lambda: node.metric("scantune_dicom_results_delivered_total", kind="stow") == 1,
            5,
            "the delivery is recorded",
        )
        assert "s3cret" not in node.log_text()
    finally:
        pacs.stop()
