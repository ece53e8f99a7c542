"""End to end: gunicorn serving the training API on PostgreSQL and S3 (moto over HTTP), a real
training on the PneumoniaMNIST slice, the registry, the promotion gate, a signed webhook, and
`scantune jobs submit --wait` from a shell."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from service.jobs.webhook import verify
from tests.conftest import REPO, data_roots, free_port, wait_for_port
from tests.training_api.conftest import KEYS, api_keys_setting, assert_conforms

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

WEBHOOK_SECRET = "e2e-webhook-secret"
JOB_TIMEOUT_S = 420


@dataclass
class Receiver:
    url: str
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def wait(self, timeout: float = 60.0) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while not self.calls:
            assert time.monotonic() < deadline, "no webhook received"
            time.sleep(0.1)
        return self.calls[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback HTTP endpoint that records each webhook delivery."""
    calls: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            calls.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield Receiver(f"http://127.0.0.1:{httpd.server_address[1]}/hooks/scantune", calls)
    httpd.shutdown()


@pytest.fixture
def server_env(
    postgres_url: str, s3_env: dict[str, str], s3_bucket: str, tmp_path: Path
) -> dict[str, str]:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    return {
        **os.environ,
        **s3_env,
        "SCANTUNE_DATABASE_URL": postgres_url,
        "SCANTUNE_ARTIFACT_URI": f"s3://{s3_bucket}/scantune",
        "SCANTUNE_WORK_DIR": str(tmp_path / "work"),
        "SCANTUNE_LAUNCHER": "local",
        "SCANTUNE_API_KEYS": api_keys_setting(),
        "SCANTUNE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SCANTUNE_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        "SCANTUNE_LOCAL_DATA_ROOTS": data_roots(tmp_path),
        "SCANTUNE_WEBHOOK_BACKOFF_S": "0.2",
        "SCANTUNE_SUPERVISOR_INTERVAL_S": "0.5",
        "SCANTUNE_HEARTBEAT_INTERVAL_S": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }


@pytest.fixture
def gunicorn(server_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Two gunicorn workers, each with its own job supervisor, sharing one database."""
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
            "--workers", "2", "--threads", "4", "--timeout", "120",
            "service.training_api:create_app()",
        ],
        cwd=REPO, env=server_env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        print((tmp_path / "gunicorn.log").read_text()[-5000:])


@pytest.fixture
def api(gunicorn: str) -> requests.Session:
    """A session whose every response is checked against api_spec/openapi.yaml."""
    session = requests.Session()
    session.headers.update(KEYS["admin"].headers)
    session.hooks["response"].append(lambda response, *args, **kwargs: assert_conforms(response))
    return session


def tiny_spec(dataset: Path, **overrides: Any) -> dict[str, Any]:
    spec = {
        "model_name": "chest-xray-e2e",
        "dataset": {"uri": str(dataset), "format": "npz"},
        "base_model": "efficientnet_lite0",
        "image_size": 32,
        "epochs": 1,
        "recipe": {"batch_size": 32, "early_stopping_patience": 0},
        "promote": {"alias": "production", "min": {"val_auc": 0.5}},
    }
    spec.update(overrides)
    return spec


def follow(api: requests.Session, url: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(url).json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout}s: {job}"
        time.sleep(1.0)


def test_job_trains_publishes_to_s3_promotes_and_signs_its_webhook(
    gunicorn: str,
    api: requests.Session,
    receiver: Receiver,
    pneumonia_small_npz: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    assert api.get(f"{gunicorn}/readyz").json()["checks"] == {
        "database": "ok",
        "artifact_store": "ok",
    }
    spec = tiny_spec(pneumonia_small_npz, webhook={"url": receiver.url})
    submitted = api.post(f"{gunicorn}/v1/training-jobs", json=spec)
    assert submitted.status_code == 202, submitted.text

    job = follow(api, f"{gunicorn}{submitted.headers['Location']}")

    logs = api.get(f"{gunicorn}/v1/training-jobs/{job['id']}/logs").text
    assert job["status"] == "succeeded", f"{job}\n{logs[-3000:]}"
    assert job["progress"] == 1.0 and job["history"] and job["best_metrics"]
    version = job["artifacts"]["version"]
    assert version == 1

    # the registry serves the version; the ONNX object in S3 matches the card's sha256
    detail = api.get(f"{gunicorn}/v1/models/chest-xray-e2e/versions/{version}").json()
    card = detail["card"]
    onnx_uri = detail["artifacts"]["model.onnx"]
    assert onnx_uri == f"s3://{s3_bucket}/scantune/models/chest-xray-e2e/versions/1/model.onnx"
    from models.uri import s3_client

    s3 = s3_client(s3_env["SCANTUNE_S3_ENDPOINT_URL"])
    key = onnx_uri.removeprefix(f"s3://{s3_bucket}/")
    onnx = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert (
        hashlib.sha256(onnx).hexdigest() == card["onnx_sha256"] == job["artifacts"]["onnx_sha256"]
    )

    # the gate passed and moved the alias
    assert job["promotion"]["passed"] is True, job["promotion"]
    alias = api.get(f"{gunicorn}/v1/models/chest-xray-e2e/aliases/production").json()
    assert alias["version"] == version
    assert detail["aliases"] == ["production"]
    assert alias["set_by"] == f"team (job {job['id']})"  # the client that asked

    # outcomes reported for scans it classified, kept in PostgreSQL: figures beside the card's
    negative, positive = card["classes"]
    reports = [
        {"reference": f"ACC-{i}", "label": positive if i % 2 else negative,
         "probabilities": {negative: 1 - p, positive: p}}
        for i, p in enumerate((0.1, 0.9, 0.2, 0.8, 0.7, 0.6))
    ]  # fmt: skip
    outcomes = f"{gunicorn}/v1/models/chest-xray-e2e/versions/{version}/outcomes"
    kept = api.post(outcomes, json={"outcomes": reports}, headers=KEYS["pacs"].headers)
    assert kept.status_code == 200 and kept.json()["accepted"] == 6, kept.text
    figures = api.get(outcomes).json()
    assert (figures["reports"], figures["decision"]) == (6, "threshold")
    assert figures["threshold"] == card["threshold"]["value"]
    assert figures["validation"]["auc"] == card["estimates"]["auc"]
    assert sum(map(sum, figures["confusion_matrix"])) == 6

    # the audit trail holds the job's life, as the runner and the API recorded it
    from service.jobs.audit_store import AuditStore
    from service.jobs.database import make_engine

    engine = make_engine(server_env["SCANTUNE_DATABASE_URL"])
    trail, _ = AuditStore(engine).page(client="team")
    engine.dispose()
    actions = {(r["action"], r["target"], r["outcome"]) for r in trail}
    assert {
        ("job_submitted", f"job/{job['id']}", "accepted"),
        ("model_published", "model/chest-xray-e2e/versions/1", "published"),
        ("alias_moved", "model/chest-xray-e2e/aliases/production", "moved"),
        ("job_finished", f"job/{job['id']}", "succeeded"),
    } <= actions

    # the webhook arrived, signed with the shared secret
    headers, body = receiver.wait()
    assert verify(body, headers, WEBHOOK_SECRET)  # Standard Webhooks, as receivers check
    payload = json.loads(body)
    assert payload["event"] == "training_job.succeeded"
    assert payload["job"]["id"] == job["id"]

    metrics = api.get(f"{gunicorn}/metrics").text
    assert 'scantune_jobs{state="succeeded"} 1.0' in metrics

    # CI's view: `scantune jobs submit --wait` exits 0 for a succeeded job whose gate passed.
    # The spec promotes, so it needs models:write besides jobs:write (issue 24).
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(pneumonia_small_npz, seed=1)))
    refused = subprocess.run(
        [sys.executable, "-m", "service.cli", "jobs", "submit", str(spec_file)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**server_env, "SCANTUNE_URL": gunicorn, "SCANTUNE_API_KEY": KEYS["ci"].secret},
    )  # fmt: skip
    assert refused.returncode != 0 and "models:write" in refused.stdout + refused.stderr
    cli = subprocess.run(
        [
            sys.executable, "-m", "service.cli", "jobs", "submit", str(spec_file), "--wait",
            "--poll-interval", "1", "--timeout", str(JOB_TIMEOUT_S),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 60,
        env={**server_env, "SCANTUNE_URL": gunicorn, "SCANTUNE_API_KEY": KEYS["admin"].secret},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "succeeded: chest-xray-e2e version 2" in cli.stdout
    versions = api.get(f"{gunicorn}/v1/models/chest-xray-e2e/versions").json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
