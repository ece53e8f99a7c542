"""The jobs endpoints in-process: submit, idempotency, list, get, cancel, logs, metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.training_api.conftest import KEYS, job_spec


def submit(client: FlaskClient, dataset: Path, **overrides: object) -> dict[str, object]:
    response = client.post("/v1/training-jobs", json=job_spec(dataset, **overrides))
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_submit_returns_202_with_location_and_the_queued_job(
    client: FlaskClient, dataset: Path
) -> None:
    response = client.post("/v1/training-jobs", json=job_spec(dataset))

    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/training-jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["created_by"] == "admin"
    assert job["spec"]["recipe"]["batch_size"] == 64  # defaults filled in
    assert client.get(response.headers["Location"]).get_json()["id"] == job["id"]


def test_same_idempotency_key_and_body_return_the_same_job(
    client: FlaskClient, dataset: Path
) -> None:
    headers = {"Idempotency-Key": "ci-run-42"}
    first = client.post("/v1/training-jobs", json=job_spec(dataset), headers=headers)
    again = client.post("/v1/training-jobs", json=job_spec(dataset), headers=headers)

    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert len(client.get("/v1/training-jobs").get_json()["items"]) == 1


def test_same_idempotency_key_with_another_body_is_409(client: FlaskClient, dataset: Path) -> None:
    headers = {"Idempotency-Key": "ci-run-43"}
    client.post("/v1/training-jobs", json=job_spec(dataset), headers=headers)
    response = client.post("/v1/training-jobs", json=job_spec(dataset, epochs=2), headers=headers)

    assert response.status_code == 409
    assert "different request body" in response.get_json()["detail"]


def test_list_is_newest_first_filtered_and_paginated(client: FlaskClient, dataset: Path) -> None:
    ids = [submit(client, dataset, model_name=f"model-{i % 2}")["id"] for i in range(5)]

    first = client.get("/v1/training-jobs?limit=2").get_json()
    second = client.get(f"/v1/training-jobs?limit=2&cursor={first['next_cursor']}").get_json()
    third = client.get(f"/v1/training-jobs?limit=2&cursor={second['next_cursor']}").get_json()

    pages = [first, second, third]
    assert [j["id"] for p in pages for j in p["items"]] == ids[::-1]
    assert third["next_cursor"] is None
    only = client.get("/v1/training-jobs?model=model-1").get_json()["items"]
    assert [j["id"] for j in only] == [ids[3], ids[1]]
    assert client.get("/v1/training-jobs?status=succeeded").get_json()["items"] == []


def test_cancel_a_queued_job_then_again_is_409(client: FlaskClient, dataset: Path) -> None:
    job = submit(client, dataset)

    cancelled = client.post(f"/v1/training-jobs/{job['id']}/cancel")
    again = client.post(f"/v1/training-jobs/{job['id']}/cancel")

    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
    assert cancelled.get_json()["finished_at"] is not None
    assert again.status_code == 409
    assert "cancelled" in again.get_json()["detail"]
    listed = client.get("/v1/training-jobs?status=cancelled").get_json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_logs_are_plain_text(client: FlaskClient, dataset: Path) -> None:
    job = submit(client, dataset)

    response = client.get(f"/v1/training-jobs/{job['id']}/logs?tail=10")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"


def test_read_scope_can_read_but_not_write(
    client: FlaskClient, anonymous: FlaskClient, dataset: Path
) -> None:
    job = submit(client, dataset)
    reader = {"X-API-Key": KEYS["reader"].secret}

    assert anonymous.get(f"/v1/training-jobs/{job['id']}", headers=reader).status_code == 200
    response = anonymous.post(f"/v1/training-jobs/{job['id']}/cancel", headers=reader)
    assert response.status_code == 403
    assert "jobs:write" in response.get_json()["detail"]


def test_metrics_report_jobs_by_state(client: FlaskClient, dataset: Path) -> None:
    submit(client, dataset)
    job = submit(client, dataset, seed=1)
    client.post(f"/v1/training-jobs/{job['id']}/cancel")

    text = client.get("/metrics").get_data(as_text=True)

    assert 'scantune_jobs{state="queued"} 1.0' in text
    assert 'scantune_jobs{state="cancelled"} 1.0' in text
    assert "scantune_http_requests_total" in text


def test_health_and_readiness_are_open(anonymous: FlaskClient) -> None:
    assert anonymous.get("/healthz").status_code == 200
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "artifact_store": "ok"}


def test_non_finite_metrics_leave_as_null_not_invalid_json(
    app: Flask, client: FlaskClient, dataset: Path
) -> None:
    job = submit(client, dataset)
    app.extensions["scantune"].jobs.store.set_fields(
        job["id"], metrics={"val_auc": float("nan"), "val_loss": float("inf"), "n": 3}
    )

    response = client.get(f"/v1/training-jobs/{job['id']}")

    assert json.loads(response.get_data(as_text=True))["metrics"] == {
        "val_auc": None,
        "val_loss": None,
        "n": 3,
    }


def test_unreachable_database_and_store_are_503_with_retry_after(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from service.storage import StoreError

    def database_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    def store_down(*args: object, **kwargs: object) -> None:
        raise StoreError("bucket not reachable")

    services = app.extensions["scantune"]
    monkeypatch.setattr(services.jobs.store, "page", database_down)
    monkeypatch.setattr(services.jobs.store, "check", database_down)
    monkeypatch.setattr(services.store, "list_children", store_down)

    jobs = client.get("/v1/training-jobs")
    models = client.get("/v1/models")

    assert jobs.status_code == models.status_code == 503
    assert jobs.headers["Retry-After"] == "5"
    assert "job database" in jobs.get_json()["detail"]
    assert "artifact store" in models.get_json()["detail"]
    assert client.get("/readyz").status_code == 503
    assert client.get("/metrics").status_code == 200


def test_metrics_report_recent_job_durations(
    app: Flask, client: FlaskClient, dataset: Path
) -> None:
    job = submit(client, dataset)
    started = datetime(2026, 1, 1, tzinfo=UTC)
    app.extensions["scantune"].jobs.store.set_fields(
        job["id"],
        status="succeeded",
        started_at=started,
        finished_at=started + timedelta(seconds=42),
    )

    text = client.get("/metrics").get_data(as_text=True)

    assert 'scantune_job_duration_seconds{quantile="0.5",state="succeeded"} 42.0' in text


def test_relative_paths_are_resolved_once_at_submit_and_stored_absolute(
    client: FlaskClient, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner works in var/jobs/<id>/: a path relative to the service must not move."""
    monkeypatch.chdir(dataset.parent.parent)
    relative = f"{dataset.parent.name}/../{dataset.parent.name}/{dataset.name}"
    weights = dataset.parent / "weights.pth"
    weights.write_bytes(b"not read at submit")
    spec = job_spec(relative, weights_uri=f"{dataset.parent.name}/weights.pth")
    spec["dataset"]["val_uri"] = relative

    job = submit_json(client, spec)

    stored = client.get(f"/v1/training-jobs/{job['id']}").get_json()["spec"]
    assert stored["dataset"]["uri"] == str(dataset.resolve())
    assert stored["dataset"]["val_uri"] == str(dataset.resolve())
    assert stored["weights_uri"] == str(weights.resolve())
    # Read from anywhere else, the stored paths still name the same files.
    monkeypatch.chdir("/")
    assert Path(stored["dataset"]["uri"]).read_bytes() == dataset.read_bytes()


def test_a_missing_relative_path_is_422_naming_the_field(
    client: FlaskClient, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(dataset.parent)
    response = client.post("/v1/training-jobs", json=job_spec("no/such/scans.npz"))
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["errors"][0]["loc"] == "body/dataset/uri"
    assert str(dataset.parent / "no/such/scans.npz") in problem["detail"]


def submit_json(client: FlaskClient, spec: dict[str, object]) -> dict[str, object]:
    response = client.post("/v1/training-jobs", json=spec)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_the_teams_notes_are_kept_in_the_spec_and_bounded(
    client: FlaskClient, dataset: Path
) -> None:
    notes = {"purpose": "triage of adult chest films", "limitations": ["not for children"],
             "contact": "ai-team@hospital.example"}  # fmt: skip
    job = submit(client, dataset, notes=notes)
    assert job["spec"]["notes"] == notes
    too_much = {"limitations": ["x" * 301, ""], "purpose": "", "colour": "red"}
    response = client.post("/v1/training-jobs", json=job_spec(dataset, notes=too_much))
    assert response.status_code == 422
    where = {e["loc"] for e in response.get_json()["errors"]}
    assert where == {"body/notes/limitations/0", "body/notes/limitations/1",
                     "body/notes/purpose", "body/notes/colour"}  # fmt: skip
