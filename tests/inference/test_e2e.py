"""End to end: gunicorn serving models from the S3 endpoint (moto over HTTP on loopback)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.cli import main as cli_main
from service.commands.serve import gunicorn_command, service_env
from service.registry import Registry
from service.storage import open_store
from tests.conftest import free_port, wait_for_port
from tests.inference.conftest import MODEL, Trained, publish

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.e2e]
FILES = ["normal_0.png", "pneumonia_1_rescale.dcm", "big_pneumonia_0.png"]


@pytest.fixture
def s3_registry(s3_bucket: str, s3_env: dict[str, str], trained: Trained) -> Registry:
    store = open_store(
        f"s3://{s3_bucket}/scantune", endpoint_url=s3_env["SCANTUNE_S3_ENDPOINT_URL"]
    )
    registry = Registry(store)
    publish(registry, trained, 1)
    registry.set_alias(MODEL, "production", 1, actor="test")
    return registry


@pytest.fixture(params=["sync", "gthread"])
def server(
    request: pytest.FixtureRequest, s3_registry: Registry, s3_env: dict[str, str], tmp_path: Path
) -> Iterator[str]:
    """Both layouts: sync workers, one per core (the CPU default, coordinated through
    service.cores), and threaded workers that micro-batch (a GPU's)."""
    port = free_port()
    env = {
        **os.environ,
        **s3_env,
        "SCANTUNE_ARTIFACT_URI": s3_registry.store.uri,
        "SCANTUNE_AUTH_DISABLED": "true",
        "SCANTUNE_PRELOAD_MODELS": json.dumps([MODEL]),
        "SCANTUNE_ALIAS_POLL_INTERVAL_S": "0.3",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    (tmp_path / "metrics").mkdir()
    threads = 4 if request.param == "gthread" else None
    cmd = gunicorn_command(
        "inference", "127.0.0.1", port, workers=2, threads=threads, worker_class=request.param
    )
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(cmd, env=service_env("inference", env), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc=proc)
        deadline = time.monotonic() + 30
        # Both workers ready: /readyz answers for whichever worker takes it, so wait for
        # the loaded-models gauge, summed over the live workers, to count both.
        while "scantune_models_loaded 2.0" not in requests.get(f"{url}/metrics").text:
            assert time.monotonic() < deadline, "workers never became ready"
            time.sleep(0.1)
        assert requests.get(f"{url}/readyz").ok
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def files(images: Path) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (name, (images / name).read_bytes())) for name in FILES]


def test_v1_v2_and_the_cli_against_gunicorn_and_s3(
    server: str,
    http: Any,
    fixture_images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1 = http.post(f"{server}/v1/models/{MODEL}:predict", files=files(fixture_images))
    assert v1.status_code == 200, v1.text
    assert [p["file"] for p in v1.json()["predictions"]] == FILES
    assert v1.json()["model"]["version"] == 1

    encoded = [base64.b64encode((fixture_images / n).read_bytes()).decode() for n in FILES]
    tensor = {"name": "image", "shape": [len(FILES)], "datatype": "BYTES", "data": encoded}
    v2 = http.post(f"{server}/v2/models/{MODEL}/infer", json={"inputs": [tensor]})
    assert v2.status_code == 200, v2.text
    probs = v2.json()["outputs"][0]["data"]
    expected = [p["probabilities"][c] for p in v1.json()["predictions"] for c in p["probabilities"]]
    assert probs == pytest.approx(expected, abs=1e-6)

    paths = [str(fixture_images / n) for n in FILES]
    assert cli_main(["predict", "--model", MODEL, "--url", server, *paths]) == 0
    table = capsys.readouterr().out
    assert f"model {MODEL} version 1" in table and "pneumonia_1_rescale.dcm" in table
    assert cli_main(["predict", "--model", "nope", "--url", server, paths[0]]) == 5
    assert "404" in capsys.readouterr().err
    _cli_writes_a_sheet_for_outcomes(server, paths, tmp_path, capsys)
    _cli_answers_in_hospital_formats(server, fixture_images, tmp_path, capsys)

    metrics = http.get(f"{server}/metrics").text
    assert (
        f'scantune_inference_requests_total{{model="{MODEL}",status="200",version="1"}}' in metrics
    )
    assert "scantune_models_loaded 2.0" in metrics  # one per worker


def _cli_writes_a_sheet_for_outcomes(
    server: str, paths: list[str], out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scantune predict --outcomes-sheet`: a row per scan with what the version answered and
    an empty label; filled in, it is what `scantune models outcomes --report` sends."""
    import csv

    from service.commands.outcomes import read_csv

    sheet = out / "reads.csv"
    argv = ["predict", "--model", MODEL, "--url", server, "--outcomes-sheet", str(sheet)]
    assert cli_main([*argv, "--json", *paths]) == 0
    answer = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader(sheet.open()))
    assert [r["file"] for r in rows] == FILES and {r["label"] for r in rows} == {""}
    assert [r["reference"] for r in rows] == [
        f"{answer['request_id']}/{i}" for i in range(len(FILES))
    ]
    for row, said in zip(rows, answer["predictions"], strict=True):
        assert {c: float(row[c]) for c in said["probabilities"]} == said["probabilities"]
    rows[0]["label"] = rows[1]["label"] = "pneumonia"  # two confirmed so far
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sent = read_csv(sheet)
    assert [o["reference"] for o in sent] == [rows[0]["reference"], rows[1]["reference"]]
    assert set(sent[0]["probabilities"]) == set(answer["predictions"][0]["probabilities"])
    sheet.unlink()
    assert cli_main([*argv, "--accept", "application/fhir+json", paths[0]]) == 2
    assert "drop --accept" in capsys.readouterr().err and not sheet.exists()


def _cli_answers_in_hospital_formats(
    server: str, images: Path, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scantune predict --accept`: the SR written whole to --output, the FHIR Bundle and the
    HL7 message printed, and a refused request leaves no file behind."""
    import pydicom
    from pydicom.uid import generate_uid

    scan = pydicom.dcmread(images / "pneumonia_1_rescale.dcm")
    scan.StudyInstanceUID, scan.SeriesInstanceUID = generate_uid(), generate_uid()
    dicom = out / "scan.dcm"
    scan.save_as(dicom)
    sr_path = out / "answer-sr.dcm"
    args = ["predict", "--model", MODEL, "--url", server, "--accept", "application/dicom"]
    assert cli_main([*args, "-o", str(sr_path), str(dicom)]) == 0, capsys.readouterr().err
    sr = pydicom.dcmread(sr_path)
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == scan.StudyInstanceUID
    fhir = ["predict", "--model", MODEL, "--url", server, "--accept", "application/fhir+json"]
    assert cli_main([*fhir, str(dicom)]) == 0
    assert json.loads(capsys.readouterr().out)["resourceType"] == "Bundle"
    hl7 = ["predict", "--model", MODEL, "--url", server, "--accept", "x-application/hl7-v2+er7"]
    assert cli_main([*hl7, str(dicom)]) == 0
    message = capsys.readouterr().out
    assert message.startswith("MSH|^~\\&|") and f"|{scan.StudyInstanceUID}|" in message
    refused = out / "refused.dcm"
    assert cli_main([*args, "-o", str(refused), str(images / "normal_0.png")]) == 5
    assert "422" in capsys.readouterr().err
    assert not refused.exists() and not list(out.glob(".refused.dcm.*"))
    files = ["predict", "--model", MODEL, "--url", server, "--explain", "--dicom-dir"]
    assert cli_main([*files, str(out / "answer"), str(dicom)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "answer").iterdir()) == ["map-001.dcm", "report.dcm"]
    assert pydicom.dcmread(out / "answer" / "report.dcm").Modality == "SR"
    mapped = pydicom.dcmread(out / "answer" / "map-001.dcm")
    assert mapped.SourceImageSequence[0].ReferencedSOPInstanceUID == scan.SOPInstanceUID
    assert cli_main([*files, str(out / "answer"), str(dicom)]) == 2  # never over a folder
    assert cli_main([*files, str(out / "png"), str(images / "normal_0.png")]) == 5
    assert not (out / "png").exists() and not list(out.glob(".png.*"))
    from service.client import Client

    client = Client("http://unused", inference_url=server)  # the Python client, as a viewer's
    sr, mapped = (pydicom.dcmread(io.BytesIO(f)) for f in client.predict_dicom(
        MODEL, [dicom], explain=True))  # fmt: skip
    assert (sr.Modality, mapped.SourceImageSequence[0].ReferencedSOPInstanceUID) == (
        "SR",
        scan.SOPInstanceUID,
    )
    assert len(client.predict_dicom(MODEL, [dicom])) == 1  # without explain: the SR alone
    assert client.predict(MODEL, [dicom])["predictions"][0]["dicom"]["sop_instance_uid"] == (
        scan.SOPInstanceUID
    )


def test_every_kind_of_predict_body_is_answered_alike_under_gunicorn(
    server: str, http: Any, fixture_images: Path
) -> None:
    """Bodies read from gunicorn's socket (a raw scan, a compressed body, an unusual multipart
    layout) give the plain multipart's answer; a scan that does not decode, a problem."""
    import gzip

    url = f"{server}/v1/models/{MODEL}:predict"
    png = (fixture_images / "normal_0.png").read_bytes()
    plain = http.post(url, files=[("file", ("n.png", png))])
    assert plain.status_code == 200, plain.text
    expected = plain.json()["predictions"][0]["probabilities"]
    raw = http.post(url, data=png, headers={"Content-Type": "image/png"})
    lf_body = (
        b'--b\nContent-Disposition: form-data; name="file"; filename="n.png"\n\n'
        + png + b"\n--b--\n"
    )  # fmt: skip
    bare_lf = http.post(
        url, data=lf_body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    request = requests.Request("POST", url, files=[("file", ("n.png", png))]).prepare()
    gzipped = http.post(
        url,
        data=gzip.compress(request.body),
        headers={"Content-Type": request.headers["Content-Type"], "Content-Encoding": "gzip"},
    )
    for answer in (raw, bare_lf, gzipped):
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["probabilities"] == pytest.approx(expected, abs=1e-6)
    refused = http.post(url, files=[("file", ("notes.txt", b"not a scan at all"))])
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == "notes.txt"
    assert refused.headers["Content-Type"] == "application/problem+json"


def test_tritonclient_json_and_binary_tensors_agree_with_v1(
    server: str, http: Any, fixture_images: Path, trained: Trained
) -> None:
    """The standard V2 client, as users run it: it sends no Content-Type, and by default
    binary tensor data (`Inference-Header-Content-Length`). Both used to be a 400."""
    import numpy as np
    import tritonclient.http as triton

    from models import scans

    v1 = http.post(f"{server}/v1/models/{MODEL}:predict", files=files(fixture_images)).json()
    expected = np.array([list(p["probabilities"].values()) for p in v1["predictions"]])
    spec = trained.v1_card.input
    batch = np.stack(
        [scans.to_model_input(scans.read_file(fixture_images / n), spec) for n in FILES]
    )
    encoded = np.array([(fixture_images / n).read_bytes() for n in FILES], dtype=np.object_)
    client = triton.InferenceServerClient(server.removeprefix("http://"))
    try:
        assert client.is_model_ready(MODEL)
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        for datatype, values, binary_in in [
            ("FP32", batch, False),
            ("FP32", batch, True),
            ("BYTES", encoded, True),  # JSON BYTES are base64 here, not tritonclient's raw text
        ]:
            for binary_out in (False, True):
                tensor = triton.InferInput("image", list(values.shape), datatype)
                tensor.set_data_from_numpy(values, binary_data=binary_in)
                wanted = triton.InferRequestedOutput("probabilities", binary_data=binary_out)
                result = client.infer(MODEL, [tensor], outputs=[wanted])
                probabilities = result.as_numpy("probabilities")
                assert probabilities is not None, (datatype, binary_in, binary_out)
                np.testing.assert_allclose(probabilities, expected, atol=1e-5)
        tensor = triton.InferInput("image", list(encoded.shape), "BYTES")
        tensor.set_data_from_numpy(encoded, binary_data=True)
        compressed = client.infer(MODEL, [tensor], request_compression_algorithm="gzip")
        np.testing.assert_allclose(compressed.as_numpy("probabilities"), expected, atol=1e-5)
    finally:
        client.close()


def test_no_patient_data_or_dicom_value_reaches_the_logs(
    server: str, http: Any, fixture_images: Path, tmp_path: Path
) -> None:
    """The fixtures' DICOMs carry a patient name and ID; malformed ones make pydicom warn with
    the element's value. None of it may reach the service's log, at its default INFO level,
    whether the scan is classified or refused."""
    from tests.data.make_fixtures import with_elements

    good = (fixture_images / "normal_0_rescale.dcm").read_bytes()
    scans = {
        "good.dcm": (good, 200),
        "inf-slope.dcm": (with_elements(good, RescaleSlope="inf"), 422),
        "odd-window.dcm": (with_elements(good, WindowCenter=b"7e7x"), 422),
    }
    for name, (data, status) in scans.items():
        response = http.post(f"{server}/v1/models/{MODEL}:predict", files={"file": (name, data)})
        assert response.status_code == status, response.text
    time.sleep(0.5)  # let the workers' log lines reach the file
    log = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert log.count("status=422") >= 2, log[-2000:]  # the log does hold the requests
    for secret in ("Test^Fixture", "FIXTURE-0001", "'inf'", "7e7x"):
        assert secret not in log, secret


def test_a_scan_that_crashes_the_jpeg_ls_decoder_costs_a_422_not_a_worker(
    server: str, http: Any, fixture_images: Path, tmp_path: Path
) -> None:
    """GDCM aborts on this file; it runs in each worker's helper process, so the worker
    answers 422, decodes the next JPEG-LS and JPEG Lossless scans with a new helper, and is
    never replaced; GDCM's own messages reach no log."""
    url = f"{server}/v1/models/{MODEL}:predict"
    names = ["normal_1_jpeg_lossless.dcm", "pneumonia_1_jpeg_ls.dcm"]
    good = [("file", (n, (fixture_images / n).read_bytes())) for n in names]
    before = http.post(url, files=good)
    assert before.status_code == 200, before.text
    log = tmp_path / "gunicorn.log"
    booted = log.read_text(errors="replace").count("Booting worker")
    crash = (fixture_images / "normal_0_jpeg_ls_gdcm_crash.dcm").read_bytes()
    for _ in range(4):  # both workers, whichever takes each request
        refused = http.post(url, files={"file": ("crash.dcm", crash)})
        assert refused.status_code == 422, refused.text
        assert "crash.dcm: cannot decode DICOM pixel data (the decoder process was killed by" \
            in refused.json()["detail"]  # fmt: skip
        after = http.post(url, files=good)
        assert after.status_code == 200, after.text
        assert after.json()["predictions"] == before.json()["predictions"]
    time.sleep(0.5)
    text = log.read_text(errors="replace")
    assert text.count("Booting worker") == booted, text[-2000:]
    assert "terminate called" not in text and "gdcm" not in text.lower()


def test_alias_moves_under_steady_traffic_without_a_failed_request(
    server: str, http: Any, s3_registry: Registry, trained: Trained, fixture_images: Path
) -> None:
    results: list[tuple[int, int | None]] = []
    stop = threading.Event()
    scan = (fixture_images / "normal_0.png").read_bytes()

    def client() -> None:
        session = http  # validates every response against the spec
        while not stop.is_set():
            r = session.post(
                f"{server}/v1/models/{MODEL}:predict", files={"file": ("s.png", scan)}, timeout=10
            )
            results.append((r.status_code, r.json().get("model", {}).get("version")))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(0.5)
        publish(s3_registry, trained, 2)
        publish(s3_registry, trained, 3)
        _corrupt(s3_registry, 3)
        s3_registry.set_alias(MODEL, "production", 2, actor="test")
        deadline = time.monotonic() + 20
        while not (len(results) > 20 and all(v == 2 for _, v in results[-20:])):
            assert time.monotonic() < deadline, "responses never switched to version 2"
            time.sleep(0.1)
        s3_registry.set_alias(MODEL, "production", 3, actor="test")  # corrupt: refused
        time.sleep(1.5)  # several poll intervals
    finally:
        stop.set()
        thread.join(timeout=15)
    statuses = {status for status, _ in results}
    assert statuses == {200}, f"failed requests: {[r for r in results if r[0] != 200]}"
    versions = [v for _, v in results]
    assert versions[0] == 1 and versions[-1] == 2 and 3 not in versions
    refused = http.post(
        f"{server}/v1/models/{MODEL}:predict?version=3", files={"file": ("s.png", scan)}
    )
    assert refused.status_code == 503 and "sha256" in refused.json()["detail"]
    metrics = http.get(f"{server}/metrics").text
    assert (
        f'scantune_model_load_failures_total{{model="{MODEL}",reason="ArtifactCorrupt"}}' in metrics
    )


def _corrupt(registry: Registry, version: int) -> None:
    key = f"{registry.version_prefix(MODEL, version)}/model.onnx"
    data = bytearray(registry.store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    registry.store.put_bytes(key, bytes(data))
