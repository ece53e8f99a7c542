"""End to end: gunicorn, a real PACS (Orthanc) and the trained model. Scans uploaded to the
PACS are classified by UID, the SR is stored back, found again by QIDO-RS in the study, and
passes the DICOM validators; the FHIR Bundle carries the JSON answer's probabilities."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from service.commands.serve import gunicorn_command, service_env
from service.registry import Registry
from tests.conftest import free_port, wait_for_port
from tests.hospital.conftest import Orthanc, orthanc, study  # noqa: F401 (fixtures)
from tests.inference.conftest import MODEL
from tests.inference.test_hospital import registry  # noqa: F401 (the coded, CR-only card)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def server(
    registry: Registry,  # noqa: F811
    orthanc: Orthanc,  # noqa: F811
    tmp_path: Path,
) -> Iterator[str]:
    """One sync gunicorn worker serving the model, with Orthanc as its PACS."""
    port = free_port()
    env = {
        **os.environ,
        "SCANTUNE_ARTIFACT_URI": registry.store.uri,
        "SCANTUNE_AUTH_DISABLED": "true",
        "SCANTUNE_PRELOAD_MODELS": json.dumps([MODEL]),
        "SCANTUNE_DICOMWEB_URL": orthanc.dicomweb,
        "SCANTUNE_DICOMWEB_USERNAME": orthanc.auth[0],
        "SCANTUNE_DICOMWEB_PASSWORD": orthanc.auth[1],
        "SCANTUNE_DICOM_UID_ROOT": "1.2.826.0.1.3680043.10.1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    cmd = gunicorn_command("inference", "127.0.0.1", port, workers=1, worker_class="sync")
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(cmd, env=service_env("inference", env), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc=proc)
        deadline = time.monotonic() + 60
        while not requests.get(f"{url}/readyz", timeout=5).ok:
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    written = (tmp_path / "gunicorn.log").read_text()
    assert "Test^Fixture" not in written and "FIXTURE-0001" not in written  # no patient data


def _stored_sr(orthanc: Orthanc, sop_uid: str, target: Path) -> Path:  # noqa: F811
    """The SR as Orthanc stored it (its REST API: the file by SOP Instance UID)."""
    auth = orthanc.auth
    found = requests.post(f"{orthanc.url}/tools/lookup", data=sop_uid, auth=auth, timeout=10)
    (entry,) = found.json()
    data = requests.get(f"{orthanc.url}{entry['Path']}/file", auth=auth, timeout=10).content
    target.write_bytes(data)
    return target


def test_classify_by_uid_store_the_sr_and_find_it_again(
    server: str,
    orthanc: Orthanc,  # noqa: F811
    study: Callable[..., list[Path]],  # noqa: F811
    http: Any,
    tmp_path: Path,
) -> None:
    paths = study()
    orthanc.upload(paths)
    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    url = f"{server}/v1/models/{MODEL}:predict"
    body = {"dicomweb": {"study_instance_uid": uid}}

    answer = http.post(f"{url}?store=true", json=body)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    report = answer.json()["report"]
    assert report["study_instance_uid"] == uid
    assert report["sop_instance_uid"].startswith("1.2.826.0.1.3680043.10.1.")
    found = orthanc.qido(f"studies/{uid}/instances", Modality="SR")
    assert [i["00080018"]["Value"][0] for i in found] == [report["sop_instance_uid"]]

    sr = _stored_sr(orthanc, report["sop_instance_uid"], tmp_path / "sr.dcm")
    checked = subprocess.run(["dciodvfy", str(sr)], capture_output=True, text=True)
    assert "Error" not in checked.stdout + checked.stderr, checked.stderr
    dump = subprocess.run(["dsrdump", "+Pl", str(sr)], capture_output=True, text=True, check=True)
    assert '"Algorithm Version")="1"' in dump.stdout
    labels = {p["label"] for p in predictions}
    assert ('(233604007,SCT,"Pneumonia")' in dump.stdout) is ("pneumonia" in labels)
    assert ('(normal,99SCANTUNE,"normal")' in dump.stdout) is ("normal" in labels)

    fhir = http.post(url, json=body, headers={"Accept": "application/fhir+json"})
    assert fhir.status_code == 200 and fhir.headers["Content-Type"] == "application/fhir+json"
    bundle = Bundle.model_validate_json(fhir.content)
    (diagnostic,) = [e.resource for e in bundle.entry if isinstance(e.resource, DiagnosticReport)]
    assert diagnostic.imagingStudy[0].identifier.value == f"urn:oid:{uid}"
    observations = [e.resource for e in bundle.entry if isinstance(e.resource, Observation)]
    by_sop = {p["dicom"]["sop_instance_uid"]: p["probabilities"] for p in predictions}
    for observation in observations:
        sop = observation.derivedFrom[0].display.removeprefix("SOP Instance UID ")
        got = {c.code.text: float(c.valueQuantity.value) for c in observation.component}
        assert got == by_sop[sop]
