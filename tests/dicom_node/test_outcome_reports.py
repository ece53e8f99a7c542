"""Outcomes from the RIS's reports end to end: a modality's study classified by the node
(under gunicorn, the model served by the inference service), the RIS's ORU^R01 over MLLP, and
the confirmed outcomes at the real training service (under gunicorn), which shows them beside
the version's card: sent once the training service is up (signed by inference, checked
there), replaced by a corrected report, retracted by one that confirms no class; a report
that came before its exam's scans labels them when they come, and is listed held until then;
preliminary, uncoded and ambiguous reports send nothing. A study purged at the node after its
outcomes were sent leaves the version's figures there."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.auth import hash_key
from service.cli import main
from service.config import DicomNodeSettings
from tests.dicom_node.conftest import OPS_KEY, SIGNING_KEY
from tests.dicom_node.parts import PACS_AE, Gunicorn, Orthanc, make_study, send, wait_until
from tests.dicom_node.test_e2e import QUIET_S, SLACK_S
from tests.dicom_node.test_orders import hl7_node
from tests.dicom_node.test_orders import send as send_hl7
from tests.dicom_node.test_purge_e2e import SALT, database, purged
from tests.dicom_node.test_purges import naming
from tests.dicom_node.test_recall_e2e import admin_keys
from tests.hospital.test_hl7_orders import orm
from tests.hospital.test_hl7_reports import oru
from tests.inference.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
OUTCOMES_KEY = "node-key-for-the-training-service"
CODES = {MODEL: {"pneumonia": ["RADLEX|RID5350"], "normal": ["RID13173", "SCT|17621005"]}}
PNEUMONIA, NORMAL = "CWE|RID5350^pneumonia^RADLEX", "CWE|RID13173^normal^RADLEX"


@pytest.fixture
def training(inference: Gunicorn, tmp_path: Path) -> Iterator[Gunicorn]:
    """The training service over the inference service's registry (not started): the node
    holds a key of its own there (scopes predict, to report, and read, to see its reports)."""
    keys = [{"name": "dicom-node", "sha256": hash_key(OUTCOMES_KEY), "scopes": ["predict", "read"]}]
    env = {
        "SCANTUNE_DATABASE_URL": f"sqlite:///{tmp_path / 'training.db'}",
        "SCANTUNE_ARTIFACT_URI": inference.env["SCANTUNE_ARTIFACT_URI"],
        "SCANTUNE_API_KEYS": json.dumps(keys),
        "SCANTUNE_PREDICTION_SIGNING_KEY": SIGNING_KEY,
        "SCANTUNE_OUTCOMES_SIGNED_ONLY": "true",  # what the node sends is what inference said
    }
    server = Gunicorn("training", env, tmp_path / "training")
    yield server
    server.stop()


@pytest.fixture
def node(make_node: Callable[..., Gunicorn], orthanc: Orthanc, training: Gunicorn) -> Gunicorn:
    return hl7_node(
        make_node, orthanc, orders=False, dicom_outcome_codes=CODES,
        training_url=training.url, dicom_training_api_key=OUTCOMES_KEY,
    )  # fmt: skip  # a site that sends reports, not orders


def outcomes(training: Gunicorn) -> dict[str, Any]:
    answer = requests.get(
        f"{training.url}/v1/models/{MODEL}/versions/1/outcomes",
        headers={"Authorization": f"Bearer {OUTCOMES_KEY}"},
        timeout=10,
    )
    answer.raise_for_status()
    return dict(answer.json())


def test_the_rises_final_report_reaches_the_training_service_as_confirmed_outcomes(
    node: Gunicorn, orthanc: Orthanc, training: Gunicorn, capsys: pytest.CaptureFixture[str]
) -> None:
    # The RIS reported RIS-32 before the PACS sent its study: the report waits for the scan.
    assert send_hl7(node, two_exams(oru("F", (NORMAL,), "RIS-32"), "RIS-99")) == "AA"
    assert node.metric("scantune_dicom_reports_total", outcome="held") == 2
    study, late = make_study(3), make_study(1)
    for ds in study:
        ds.AccessionNumber = "RIS-31"
    late[0].AccessionNumber = "RIS-32"
    assert send(node.port_dicom, study) == [0, 0, 0] and send(node.port_dicom, late) == [0]
    for ds in (study[0], late[0]):
        uid = ds.StudyInstanceUID
        wait_until(lambda u=uid: orthanc.reports(u), QUIET_S + SLACK_S, "each series classified")

    # Nothing to send: a preliminary report, free text only, two classes coded.
    assert send_hl7(node, oru("P", (PNEUMONIA,), "RIS-31")) == "AA"
    assert send_hl7(node, oru("F", (), "RIS-31")) == "AA"
    assert send_hl7(node, oru("F", (PNEUMONIA, NORMAL), "RIS-31")) == "AA"
    assert send_hl7(node, oru("F", (PNEUMONIA,), "")) == "AE"  # no exam named
    for outcome in ("not_final", "unmapped", "ambiguous", "refused"):
        assert node.metric("scantune_dicom_reports_total", outcome=outcome) == 1, outcome
    assert send_hl7(node, orm()) == "AR"  # this node takes no orders

    # The final report while the training service is down: kept, and sent once it is up.
    assert send_hl7(node, oru("F", (PNEUMONIA,), "RIS-31")) == "AA"
    assert node.metric("scantune_dicom_reports_total", outcome="labelled") == 1
    wait_until(
        lambda: node.metric("scantune_dicom_outcomes_total", outcome="retried") >= 3,
        20, "the node tries the training service",
    )  # fmt: skip
    training.start()
    wait_until(lambda: outcomes(training)["reports"] == 4, 30, "the outcomes arrive")
    shown = outcomes(training)
    assert shown["by_label"] == {"normal": 1, "pneumonia": 3}  # RIS-32's early report counts
    assert (shown["clients"], shown["reported_by"]) == (1, "dicom-node")

    # A correction replaces the first read at the training service: the same three scans.
    assert send_hl7(node, oru("C", ("CE|17621005^Normal^SCT",), "RIS-31")) == "AA"
    wait_until(
        lambda: outcomes(training)["by_label"] == {"normal": 4, "pneumonia": 0},
        30, "the correction replaces the first read",
    )  # fmt: skip
    assert outcomes(training)["reports"] == 4
    assert node.metric("scantune_dicom_outcomes_total", outcome="sent") == 7

    # RIS-32's read withdrawn (the finding struck, free text left): retracted there, so it no
    # longer counts for the version; RIS-31's stand
    assert send_hl7(node, oru("C", (), "RIS-32")) == "AA"
    assert node.metric("scantune_dicom_reports_total", outcome="retracted") == 1
    wait_until(lambda: outcomes(training)["reports"] == 3, 30, "the withdrawn read is retracted")
    assert outcomes(training)["by_label"] == {"normal": 3, "pneumonia": 0}
    assert node.metric("scantune_dicom_outcomes_total", outcome="retracted") == 1
    [gone] = node.items("/v1/outcome-reports?state=retracted", OPS_KEY)
    assert (gone["accession_number"], gone["label"]) == ("RIS-32", None)
    sent = node.items("/v1/outcome-reports?state=sent", OPS_KEY)  # what the operator sees
    assert (
        sorted((o["accession_number"], o["label"], o["signed"]) for o in sent)
        == [("RIS-31", "normal", True)] * 3
    )
    assert node.items("/v1/outcome-reports?state=refused", OPS_KEY) == []
    assert main(["series", "outcomes", "--url", node.url, "--api-key", OPS_KEY]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["ID", "ACCESSION", "MODEL", "STATE"] and len(lines) == 4
    shown_lines = sorted(line.split()[1:6] for line in lines)
    assert shown_lines[0] == ["RIS-31", MODEL, "v1", "sent", "normal"]
    assert shown_lines[-1] == ["RIS-32", MODEL, "v1", "retracted", "-"]

    # the reports kept: RIS-31's correction labels its three scans, RIS-99's waits for a study
    # (RIS-32's last one confirmed nothing: not kept)
    exams = node.items("/v1/outcome-reports/exams", OPS_KEY)
    assert sorted((e["accession_number"], e["confirms"], e["scans"], e["held"]) for e in exams) == [
        ("RIS-31", {MODEL: "normal"}, 3, False), ("RIS-99", {MODEL: "pneumonia"}, 0, True)
    ]  # fmt: skip
    assert main(["series", "reports", "--held", "--url", node.url, "--api-key", OPS_KEY]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert "CONFIRMS" in header and len(lines) == 1
    assert lines[0].split()[1] == "RIS-99" and lines[0].endswith(f"held  {MODEL}: pneumonia")
    log = node.log_text()
    assert "RIS-3" not in log and not any(ds.SOPInstanceUID in log for ds in study + late)


def test_a_purged_study_s_outcomes_leave_the_version_s_figures(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, training: Gunicorn
) -> None:
    """The patient declined AI processing once the RIS's reports had reached the training
    service: the purge retracts the study's outcomes there (the other exam's stand), and the
    node keeps nothing of them once they are retracted."""
    training.start()
    node = hl7_node(
        make_node, orthanc, orders=False, dicom_outcome_codes=CODES, training_url=training.url,
        dicom_training_api_key=OUTCOMES_KEY, api_keys=admin_keys(), audit_salt=SALT,
    )  # fmt: skip
    mistaken, kept = make_study(2), make_study(1)
    for ds in mistaken:
        ds.AccessionNumber = "RIS-41"
    kept[0].AccessionNumber = "RIS-42"
    assert send(node.port_dicom, mistaken + kept) == [0, 0, 0]
    for ds in (mistaken[0], kept[0]):
        uid = ds.StudyInstanceUID
        wait_until(lambda u=uid: orthanc.reports(u), QUIET_S + SLACK_S, "each series classified")
    assert send_hl7(node, oru("F", (PNEUMONIA,), "RIS-41")) == "AA"
    assert send_hl7(node, oru("F", (NORMAL,), "RIS-42")) == "AA"
    wait_until(lambda: outcomes(training)["reports"] == 3, 30, "the outcomes arrive")
    assert outcomes(training)["by_label"] == {"normal": 1, "pneumonia": 2}

    view = purged(node, mistaken[0].StudyInstanceUID, "declined AI processing")
    assert (view["outcomes_retracting"], view["outcomes_deleted"]) == (2, 0)
    assert view["exam_reports_deleted"] == 1  # RIS-41's: no other scan of the exam here
    wait_until(lambda: outcomes(training)["reports"] == 1, 30, "the study's outcomes retracted")
    assert outcomes(training)["by_label"] == {"normal": 1, "pneumonia": 0}
    wait_until(
        lambda: node.metric("scantune_dicom_outcomes_total", outcome="retracted") == 2,
        SLACK_S, "the node told",
    )  # fmt: skip
    [left] = node.items("/v1/outcome-reports", OPS_KEY)  # the retracted ones deleted
    assert (left["accession_number"], left["state"], left["label"]) == ("RIS-42", "sent", "normal")
    study = [mistaken[0].StudyInstanceUID, *(ds.SOPInstanceUID for ds in mistaken)]
    assert naming(database(node), "RIS-41", *study) == []


def two_exams(message: bytes, other: str) -> bytes:
    """`message` reporting a second exam, `other`, in an OBR group of its own."""
    obr = next(s for s in message.split(b"\r") if s.startswith(b"OBR|"))
    group = b"ORC|RE|PL-2|FL-78||CM\r" + obr.replace(obr.split(b"|")[18], other.encode())
    return message + group + b"\rOBX|1|CWE|FIND^Finding||RID5350^pneumonia^RADLEX||||||F\r"


def test_outcome_codes_need_the_hl7_port_and_one_class_a_code() -> None:
    with pytest.raises(ValueError, match="come on dicom_hl7_port"):
        DicomNodeSettings(dicom_outcome_codes=CODES)
    pacs = {"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1", "port": 104}
    hl7: dict[str, Any] = {
        "dicom_hl7_port": 2575,
        "dicom_sources": [pacs],
        "dicom_order_source": "pacs",
    }
    assert DicomNodeSettings(dicom_outcome_codes=CODES, **hl7).dicom_outcome_codes == CODES
    reports_only = DicomNodeSettings(dicom_outcome_codes=CODES, dicom_hl7_port=2575)
    assert reports_only.dicom_order_source is None  # the port takes reports, no orders
    with pytest.raises(ValueError, match="only the RIS's reports are taken"):
        DicomNodeSettings(dicom_hl7_port=2575)  # neither orders nor reports
    with pytest.raises(ValueError, match="must name one of dicom_sources"):
        DicomNodeSettings(dicom_outcome_codes=CODES, dicom_hl7_port=2575, dicom_order_source="x")
    twice = {MODEL: {"pneumonia": ["RID5350", "RID5350"], "normal": ["RID5350"]}}
    with pytest.raises(ValueError, match="code 'RID5350' confirms two classes"):
        DicomNodeSettings(dicom_outcome_codes=twice, **hl7)
    with pytest.raises(ValueError, match="each class needs at least one code"):
        DicomNodeSettings(dicom_outcome_codes={MODEL: {"pneumonia": []}}, **hl7)
