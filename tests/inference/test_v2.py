"""The Open Inference Protocol (KServe V2) endpoints."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from models import scans
from tests.inference.conftest import MODEL, Trained

FILES = ["normal_0.png", "pneumonia_0_rescale.dcm", "pneumonia_1_16.png"]


def test_health_and_metadata(client: Any, check: Any, trained: Trained) -> None:
    assert check(client.get("/v2")).json["name"] == "scantune-inference"
    assert check(client.get("/v2/health/live")).json == {"live": True}
    assert check(client.get("/v2/health/ready")).json == {"ready": True}
    meta = check(client.get(f"/v2/models/{MODEL}")).json
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 32, 32]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "logits", "cam"]
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert check(client.get(f"/v2/models/{MODEL}/versions/1")).status_code == 200
    assert check(client.get(f"/v2/models/{MODEL}/ready")).status_code == 503  # not loaded yet


def test_infer_tensor_and_bytes_agree_with_v1(
    client: Any, check: Any, trained: Trained, fixture_images: Path
) -> None:
    paths = [fixture_images / f for f in FILES]
    batch = np.stack(
        [scans.to_model_input(scans.read_file(p), trained.v1_card.input) for p in paths]
    )
    tensor = {"name": "image", "shape": list(batch.shape), "datatype": "FP32",
              "data": batch.ravel().tolist()}  # fmt: skip
    by_tensor = check(
        client.post(f"/v2/models/{MODEL}/infer", json={"id": "r1", "inputs": [tensor]})
    )
    assert by_tensor.status_code == 200, by_tensor.json
    body = by_tensor.json
    assert body["id"] == "r1" and body["model_name"] == MODEL and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"] == [3, 2]
    assert outputs["cam"]["shape"][:2] == [3, 2]
    probs = np.array(outputs["probabilities"]["data"]).reshape(3, 2)

    encoded = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    by_bytes = check(
        client.post(
            f"/v2/models/{MODEL}/versions/1/infer",
            json={
                "inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": encoded}],
                "outputs": [{"name": "probabilities"}],
            },
        )
    ).json
    assert [o["name"] for o in by_bytes["outputs"]] == ["probabilities"]
    np.testing.assert_allclose(
        np.array(by_bytes["outputs"][0]["data"]).reshape(3, 2), probs, atol=1e-6
    )
    v1 = client.post(
        f"/v1/models/{MODEL}:predict",
        data={"file": [(p.open("rb"), p.name) for p in paths]},
    ).json["predictions"]
    v1_probs = np.array([[p["probabilities"][c] for c in ("normal", "pneumonia")] for p in v1])
    np.testing.assert_allclose(v1_probs, probs, atol=1e-6)
    assert check(client.get(f"/v2/models/{MODEL}/ready")).json == {"name": MODEL, "ready": True}


def test_binary_tensor_data_in_and_out_match_json(
    client: Any, check: Any, trained: Trained, fixture_images: Path
) -> None:
    """The binary tensor data extension: the request's tensor after its JSON header, the
    chosen outputs after the response's, each header giving the other's length."""
    paths = [fixture_images / f for f in FILES]
    batch = np.stack(
        [scans.to_model_input(scans.read_file(p), trained.v1_card.input) for p in paths]
    ).astype("<f4")
    header = {
        "inputs": [{"name": "image", "shape": list(batch.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": batch.nbytes}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                    {"name": "logits"}],
    }  # fmt: skip
    head = json.dumps(header).encode()
    response = check(
        client.post(
            f"/v2/models/{MODEL}/infer",
            data=head + batch.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/octet-stream"
    body = response.get_data()
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(body[:length])
    probabilities, logits = meta["outputs"]
    assert probabilities["parameters"] == {"binary_data_size": 3 * 2 * 4}
    assert "data" not in probabilities and len(logits["data"]) == 6
    binary = np.frombuffer(body[length:], dtype="<f4").reshape(3, 2)
    tensor = {"name": "image", "shape": list(batch.shape), "datatype": "FP32",
              "data": batch.ravel().tolist()}  # fmt: skip
    by_json = check(client.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]})).json
    expected = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in by_json["outputs"]}
    np.testing.assert_allclose(binary, expected["probabilities"], atol=1e-6)
    np.testing.assert_allclose(
        np.array(logits["data"]).reshape(3, 2), expected["logits"], atol=1e-6
    )
