"""The node end to end with real parts: a modality (pynetdicom) or Orthanc sends a study, the
inference service under gunicorn classifies it, and Orthanc receives the structured report."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from pydicom import Dataset
from pynetdicom import AE

from tests.dicom_node.parts import MODALITY_AE, NODE_AE, Gunicorn, Orthanc, make_study, send, wait_until

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
