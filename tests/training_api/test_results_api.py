"""The dashboard's API: a job's per-epoch metrics, a version's evaluation and its files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient

from tests.training_api.conftest import KEYS, job_spec, publish_version

READER = KEYS["reader"].headers


@pytest.fixture
def published(training_env: Path) -> Path:
    publish_version(training_env / "artifacts", "chest-xray", 1)
    return training_env / "artifacts"


def test_files_list_and_stream_the_stored_bytes(
    app: Flask, client: FlaskClient, published: Path
) -> None:
    listing = client.get("/v1/models/chest-xray/versions/1/files")
    assert listing.status_code == 200
    assert {"card.json", "model.onnx", "plots/roc.png"} <= set(listing.json["items"])
    onnx = client.get("/v1/models/chest-xray/versions/1/files/model.onnx")
    assert onnx.status_code == 200
    stored = (published / "models/chest-xray/versions/1/model.onnx").read_bytes()
    assert onnx.data == stored
    assert onnx.mimetype == "application/octet-stream"
    assert 'filename="model.onnx"' in onnx.headers["Content-Disposition"]
    # openapi-core reads every body as text, so binary that is not UTF-8 skips the contract.
    plain = FlaskClient(app, Response)
    plot = plain.get("/v1/models/chest-xray/versions/1/files/plots/roc.png", headers=READER)
    assert plot.mimetype == "image/png" and plot.data == b"\x89PNG stand-in"
    card = client.get("/v1/models/chest-xray/versions/1/files/card.json")
    assert card.json["name"] == "chest-xray" and card.json["version"] == 1


@pytest.mark.parametrize(
    "path",
    [
        "../../aliases/production.json",
        "..%2F..%2F..%2Fjobs.db",
        "plots/../../2/card.json",
        "/etc/passwd",
        "checkpoints/last.pt",
    ],
)
def test_only_listed_files_are_served(app: Flask, published: Path, path: str) -> None:
    # A plain client: the contract checker would normalise the '..' away before matching.
    plain = FlaskClient(app, Response)
    response = plain.get(
        f"/v1/models/chest-xray/versions/1/files/{path}", headers=READER, follow_redirects=True
    )
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert "root:" not in response.get_data(as_text=True)


def test_files_404_for_missing_model_version_and_file(client: FlaskClient, published: Path) -> None:
    assert client.get("/v1/models/nope/versions/1/files/card.json").status_code == 404
    assert client.get("/v1/models/chest-xray/versions/9/files/card.json").status_code == 404
    missing = client.get("/v1/models/chest-xray/versions/1/files/nothing.bin")
    assert missing.status_code == 404
    assert "model.onnx" in missing.json["detail"]  # says what there is


def test_read_scope_is_needed(anonymous: FlaskClient, published: Path) -> None:
    paths = [
        "/v1/models/chest-xray/versions/1/files/model.onnx",
        "/v1/models/chest-xray/versions/1/files",
        "/v1/models/chest-xray/versions/1/evaluation",
        "/v1/training-jobs/some-job/metrics",
    ]
    for path in paths:
        assert anonymous.get(path).status_code == 401
        assert anonymous.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert anonymous.get(path, headers=KEYS["reader"].headers).status_code in (200, 404)


def test_evaluation_of_a_version_without_one_comes_from_its_card(
    client: FlaskClient, training_env: Path
) -> None:
    publish_version(
        training_env / "artifacts",
        "chest-xray",
        1,
        metrics={"confusion_matrix": [[5, 1], [2, 8]], "val_accuracy": 0.8125},  # type: ignore[dict-item]
    )
    body = client.get("/v1/models/chest-xray/versions/1/evaluation").json
    assert body["decision"] == "argmax"
    assert body["confusion_matrix"] == [[5, 1], [2, 8]]
    assert body["images"] == 16
    assert body["roc"] == []


def test_evaluation_json_is_served_when_published(client: FlaskClient, training_env: Path) -> None:
    import json

    import numpy as np

    from models import evaluation
    from models.card import DecisionThreshold

    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p1 = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.8, 0.9])
    threshold = DecisionThreshold(positive_class="pneumonia", value=0.3)
    result = evaluation.build(y, np.c_[1 - p1, p1], ["normal", "pneumonia"], threshold)
    key = training_env / "artifacts/models/chest-xray/versions/1"
    publish_version(training_env / "artifacts", "chest-xray", 1)
    (key / "evaluation.json").write_text(json.dumps(result))
    body = client.get("/v1/models/chest-xray/versions/1/evaluation").json
    # At 0.3 every pneumonia is caught and two normals are not: [[1, 2], [0, 4]]; at argmax
    # it would have been [[2, 1], [1, 3]].
    assert body["confusion_matrix"] == [[1, 2], [0, 4]]
    assert body["decision"] == "threshold" and "0.300" in body["decision_text"]
    assert body["roc"][0]["class"] == "pneumonia" and body["roc"][0]["tpr"][-1] == 1.0
    assert sum(b["count"] for b in body["calibration"]["bins"]) == 7


def test_evaluation_404s(client: FlaskClient, published: Path) -> None:
    assert client.get("/v1/models/nope/versions/1/evaluation").status_code == 404
    assert client.get("/v1/models/chest-xray/versions/2/evaluation").status_code == 404


def test_job_metrics_while_queued_and_404(client: FlaskClient, dataset: Path) -> None:
    job = client.post("/v1/training-jobs", json=job_spec(dataset)).json
    body = client.get(f"/v1/training-jobs/{job['id']}/metrics").json
    assert body["job_id"] == job["id"] and body["status"] == "queued"
    assert body["history"] == [] and body["monitor"] == "val_auc"
    assert client.get("/v1/training-jobs/no-such-job/metrics").status_code == 404


def test_job_metrics_follow_the_history_a_runner_writes(
    app: Flask, client: FlaskClient, dataset: Path
) -> None:
    from service.training_api import services

    job = client.post("/v1/training-jobs", json=job_spec(dataset, epochs=3)).json
    history = [
        {"epoch": 1, "train_loss": 0.6, "val_loss": 0.5, "val_auc": 0.90},
        {"epoch": 2, "train_loss": 0.4, "val_loss": 0.45, "val_auc": 0.93},
    ]
    with app.app_context():
        store = services().jobs.store
        (row,) = store.claim_queued(1, launcher="local")
        assert store.update_running(
            job["id"],
            row.attempts,
            epoch=3,
            epochs=3,
            history=history,
            best_metrics={"epoch": 2, "val_auc": 0.93},
        )
    body = client.get(f"/v1/training-jobs/{job['id']}/metrics").json
    assert body["status"] == "running"
    assert [h["epoch"] for h in body["history"]] == [1, 2]
    assert body["best_epoch"] == 2 and body["epoch"] == 3


@pytest.mark.s3
def test_a_file_streamed_from_s3_equals_the_stored_bytes(
    s3_bucket: str, training_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.registry import Registry
    from service.storage import open_store
    from service.training_api import create_app, services

    uri = f"s3://{s3_bucket}/scantune"
    monkeypatch.setenv("SCANTUNE_ARTIFACT_URI", uri)
    publish_version(training_env / "artifacts", "chest-xray", 1)  # a local copy to move
    local = training_env / "artifacts/models/chest-xray/versions/1"
    payload = bytes(range(256)) * 5000  # 1.28 MB: several stream chunks
    (local / "model.onnx").write_bytes(payload)
    card = Registry(open_store((training_env / "artifacts").as_uri())).get_card("chest-xray", 1)
    card = card.model_copy(update={"onnx_sha256": hashlib.sha256(payload).hexdigest()})
    (local / "card.json").unlink()
    Registry(open_store(uri, endpoint_url=_endpoint())).publish("chest-xray", 1, local, card)

    app = create_app(start_supervisor=False)
    try:
        client = app.test_client()
        response = client.get(
            "/v1/models/chest-xray/versions/1/files/model.onnx", headers=KEYS["reader"].headers
        )
        assert response.status_code == 200
        assert response.is_streamed
        assert response.data == payload
        missing = client.get(
            "/v1/models/chest-xray/versions/1/files/nope.onnx", headers=KEYS["reader"].headers
        )
        assert missing.status_code == 404
    finally:
        with app.app_context():
            services().jobs.stop()


def _endpoint() -> str:
    import os

    return os.environ["SCANTUNE_S3_ENDPOINT_URL"]
