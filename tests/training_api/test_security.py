"""The training service with several clients, tried as each would: isolation, least
privilege for promotion, secure defaults for data and webhooks, limits, the audit trail."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.auth import hash_key
from tests.training_api.conftest import ContractClient, job_spec

JOBS = "/v1/training-jobs"
TENANT_KEYS = {
    # key name: (client, scopes)
    "radiology-bot": ("radiology", ["read", "jobs:write"]),
    "radiology-lead": ("radiology", ["read", "models:write"]),
    "ci-bot": ("ci", ["read", "jobs:write", "models:write"]),
    "ci-reader": ("ci", ["read"]),
    "ops": ("ops", ["read", "jobs:write", "admin"]),
    "ops-models": ("ops", ["read", "models:write", "admin"]),
    "radiology-pacs": ("radiology", ["read", "predict"]),  # predicts, then reports outcomes
    "gateway": ("gateway", ["read", "predict"]),
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer secret-of-{name}"}


@pytest.fixture
def make_app(training_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Flask]]:
    """Build the app (no supervisor) with the tenant keys and any extra settings."""
    from service.training_api import create_app, services

    keys = [
        {"name": n, "client": c, "sha256": hash_key(f"secret-of-{n}"), "scopes": s}
        for n, (c, s) in TENANT_KEYS.items()
    ]
    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps(keys))
    built: list[Flask] = []

    def build(**settings: Any) -> Flask:
        for key, value in settings.items():
            text = value if isinstance(value, str) else json.dumps(value)
            monkeypatch.setenv(f"SCANTUNE_{key.upper()}", text)
        app = create_app(start_supervisor=False)
        app.test_client_class = ContractClient
        built.append(app)
        return app

    yield build
    for app in built:
        with app.app_context():
            services().jobs.stop()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


def as_(app: Flask, name: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = bearer(name)["Authorization"]
    return client


def submit(app: Flask, name: str, spec: dict[str, Any], status: int = 202, **kw: Any) -> Any:
    response = as_(app, name).post(JOBS, json=spec, **kw)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def audit(app: Flask, **query: str) -> list[dict[str, Any]]:
    response = as_(app, "ops").get("/v1/audit", query_string=query)
    assert response.status_code == 200, response.get_json()
    items: list[dict[str, Any]] = response.get_json()["items"]
    return items


# clients and ownership
def test_a_client_cannot_see_cancel_or_read_logs_of_another_clients_job(
    app: Flask, dataset: Path
) -> None:
    job = submit(app, "radiology-bot", job_spec(dataset))
    ci = as_(app, "ci-bot")
    for response in (
        ci.get(f"{JOBS}/{job['id']}"),
        ci.post(f"{JOBS}/{job['id']}/cancel"),
        ci.get(f"{JOBS}/{job['id']}/logs"),
        ci.get(f"{JOBS}/{job['id']}/metrics"),
    ):
        assert response.status_code == 404
        assert response.get_json()["detail"] == f"no training job with id '{job['id']}'"
    assert ci.get(JOBS).get_json()["items"] == []
    own = as_(app, "radiology-bot").get(JOBS).get_json()["items"]
    assert [j["id"] for j in own] == [job["id"]]
    # an admin key sees and cancels every client's jobs
    ops = as_(app, "ops")
    assert [j["id"] for j in ops.get(JOBS).get_json()["items"]] == [job["id"]]
    assert ops.post(f"{JOBS}/{job['id']}/cancel").get_json()["status"] == "cancelled"
    denied = audit(app, action="access_denied", client="ci")
    assert {r["target"] for r in denied} == {f"job/{job['id']}"} and len(denied) == 4
    assert as_(app, "radiology-bot").get(f"{JOBS}/{job['id']}/metrics").status_code == 200
    assert [r["client"] for r in audit(app, action="job_cancelled")] == ["ops"]


def test_keys_of_one_client_share_its_jobs(app: Flask, dataset: Path) -> None:
    job = submit(app, "ci-bot", job_spec(dataset))
    assert (job["client"], job["created_by"]) == ("ci", "ci-bot")  # the owner, and the key
    seen = as_(app, "ci-reader").get(f"{JOBS}/{job['id']}")
    assert seen.status_code == 200 and seen.get_json()["client"] == "ci"
    assert [j["client"] for j in as_(app, "ops").get(JOBS).get_json()["items"]] == ["ci"]


def test_an_admin_lists_one_clients_jobs_and_others_cannot_peek(app: Flask, dataset: Path) -> None:
    ci = submit(app, "ci-bot", job_spec(dataset))
    radiology = submit(app, "radiology-bot", job_spec(dataset))
    ops = as_(app, "ops")
    for client, job in (("ci", ci), ("radiology", radiology)):
        page = ops.get(JOBS, query_string={"client": client}).get_json()
        assert [j["id"] for j in page["items"]] == [job["id"]]
    assert len(ops.get(JOBS).get_json()["items"]) == 2
    own = as_(app, "ci-bot").get(JOBS, query_string={"client": "ci"}).get_json()["items"]
    assert [j["id"] for j in own] == [ci["id"]]
    peek = as_(app, "ci-bot").get(JOBS, query_string={"client": "radiology"})
    assert peek.status_code == 200 and peek.get_json() == {"items": [], "next_cursor": None}


def test_idempotency_keys_are_per_client(app: Flask, dataset: Path) -> None:
    key = {"Idempotency-Key": "nightly-1"}
    mine = submit(app, "radiology-bot", job_spec(dataset), headers=key)
    theirs = submit(app, "ci-bot", job_spec(dataset, epochs=2), headers=key)  # no 409, no leak
    assert theirs["id"] != mine["id"]
    again = submit(app, "radiology-bot", job_spec(dataset), headers=key)
    assert again["id"] == mine["id"]
    conflict = submit(app, "radiology-bot", job_spec(dataset, epochs=3), 409, headers=key)
    assert theirs["id"] not in conflict["detail"]


def publish_as(app: Flask, client: str, model: str) -> None:
    """A version of `model` taken by a job of `client` (what makes the client its owner)."""
    from models.spec import JobSpec
    from service.training_api import services

    with app.app_context():
        store = services().jobs.store
        spec = JobSpec.model_validate(job_spec("/x.npz", model_name=model))
        store.create(spec, actor=client, client=client)
        [job] = store.claim_queued(1, launcher="local")
        store.allocate_version(job.id, job.attempts)


def test_a_client_may_publish_only_to_models_it_owns_or_is_granted(
    make_app: Callable[..., Flask], dataset: Path
) -> None:
    app = make_app()
    publish_as(app, "radiology", "chest-xray")
    problem = submit(app, "ci-bot", job_spec(dataset, model_name="chest-xray"), 403)
    assert "belongs to another client" in problem["detail"]
    submit(app, "radiology-bot", job_spec(dataset, model_name="chest-xray"))  # its own
    submit(app, "ci-bot", job_spec(dataset, model_name="chest-new"))  # nobody's yet
    granted = make_app(model_grants={"ci": ["chest-*"]})
    submit(granted, "ci-bot", job_spec(dataset, model_name="chest-xray"))


def test_moving_another_clients_alias_by_hand_is_forbidden(app: Flask, training_env: Path) -> None:
    from tests.training_api.conftest import publish_version

    publish_version(training_env / "artifacts", "chest-xray", 1)
    publish_as(app, "radiology", "chest-xray")
    response = as_(app, "ci-bot").put(
        "/v1/models/chest-xray/aliases/production", json={"version": 1}
    )
    assert response.status_code == 403
    [denied] = audit(app, action="access_denied")
    assert (denied["client"], denied["target"]) == ("ci", "model/chest-xray/aliases/production")


# least privilege for promotion
def test_promotion_needs_models_write_at_submit(app: Flask, dataset: Path) -> None:
    spec = job_spec(dataset, promote={"alias": "production"})
    problem = submit(app, "radiology-bot", spec, 403)
    assert "models:write" in problem["detail"]
    submit(app, "ci-bot", spec)
    assert [r["client"] for r in audit(app, action="job_submitted")] == ["ci"]
    [denied] = audit(app, action="access_denied")
    assert (denied["client"], denied["target"]) == ("radiology", "model/chest-xray")


def test_the_alias_history_records_the_client_that_asked(app: Flask, training_env: Path) -> None:
    from tests.training_api.conftest import publish_version

    publish_version(training_env / "artifacts", "chest-xray", 1)
    response = as_(app, "ci-bot").put("/v1/models/chest-xray/aliases/staging", json={"version": 1})
    assert response.get_json()["set_by"] == "ci"
    [moved] = audit(app, action="alias_moved")
    assert (moved["client"], moved["target"]) == ("ci", "model/chest-xray/aliases/staging")


# dry runs: the same policy as a submit, and nothing stored
def test_a_dry_run_checks_what_a_submit_would_and_queues_nothing(
    make_app: Callable[..., Flask], dataset: Path
) -> None:
    app = make_app(model_grants={"ci": ["chest-*"]})
    publish_as(app, "radiology", "chest-xray")
    publish_as(app, "ci", "knee-xray")
    before = as_(app, "ops").get(JOBS).get_json()["items"]
    dry = {"query_string": {"dry_run": "true"}}
    ci = job_spec(dataset, model_name="chest-xray", promote={"alias": "production"})

    checks = [
        submit(app, "ci-bot", ci, 200, **dry),  # another's model, granted
        submit(app, "ci-bot", job_spec(dataset, model_name="knee-xray"), 200, **dry),
        submit(app, "radiology-bot", job_spec(dataset, model_name="hand-xray"), 200, **dry),
    ]
    assert [(c["model_name"], c["model"]) for c in checks] == [
        ("chest-xray", "granted"), ("knee-xray", "owned"), ("hand-xray", "new")
    ]  # fmt: skip
    assert checks[0]["dry_run"] is True and checks[0]["spec"]["recipe"]["batch_size"] == 64
    assert checks[0]["spec"]["promote"]["alias"] == "production"

    refused = [
        submit(app, "radiology-bot", ci, 403, **dry),  # a promotion without models:write
        submit(app, "ci-bot", job_spec(dataset, model_name="hand-xray"), 200, **dry),
        submit(app, "radiology-bot", job_spec(dataset, model_name="knee-xray"), 403, **dry),
        submit(app, "ci-bot", job_spec("/etc/passwd", model_name="knee-xray"), 422, **dry),
        submit(app, "ci-bot", job_spec(dataset.with_name("gone.npz")), 422, **dry),
    ]
    assert "models:write" in refused[0]["detail"]
    assert refused[1]["model"] == "new"  # nobody published hand-xray: a check takes nothing
    assert "belongs to another client" in refused[2]["detail"]
    assert [e["type"] for e in refused[3]["errors"]] == ["uri_not_allowed"]
    assert [(e["loc"], e["type"]) for e in refused[4]["errors"]] == [
        ("body/dataset/uri", "uri_not_found")
    ]
    # a misspelt flag would submit for real: it is refused instead
    typo = submit(app, "ci-bot", job_spec(dataset), 422, query_string={"dryrun": "true"})
    assert "dryrun" in json.dumps(typo)

    assert as_(app, "ops").get(JOBS).get_json()["items"] == before  # nothing queued, by anyone
    assert audit(app, action="job_submitted") == []
    [checked] = audit(app, action="job_checked")  # the data policy's refusal, never the URI
    assert (checked["client"], checked["outcome"]) == ("ci", "refused")
    assert "/etc/passwd" not in json.dumps(checked)
    denied = audit(app, action="access_denied")
    assert sorted(d["target"] for d in denied) == ["model/chest-xray", "model/knee-xray"]


# secure defaults: webhooks
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://127.0.0.1:6379/",  # loopback: a port scanner otherwise
        "http://[::1]:5432/",
        "http://10.1.2.3/hook",  # private range
        "http://192.168.0.10:8080/hook",
        "http://[::ffff:169.254.169.254]/",  # metadata behind an IPv4-mapped IPv6 address
        "http://localhost:8000/hook",  # a name that resolves to loopback
    ],
)
def test_webhooks_to_internal_addresses_are_refused_at_submit(
    make_app: Callable[..., Flask], dataset: Path, url: str
) -> None:
    app = make_app(webhook_allowed_hosts=[])
    problem = submit(app, "ci-bot", job_spec(dataset, webhook={"url": url}), 422)
    [error] = problem["errors"]
    assert (error["loc"], error["type"]) == ("body/webhook/url", "webhook_target_not_allowed")
    [refused] = audit(app, action="job_submitted")
    assert refused["outcome"] == "refused"
    assert refused["detail"]["rules"] == ["body/webhook/url: webhook_target_not_allowed"]
    assert url.split("//")[1].split("/")[0] not in json.dumps(refused)  # no target named


def test_an_allow_listed_internal_host_may_be_called(
    make_app: Callable[..., Flask], dataset: Path
) -> None:
    app = make_app(webhook_allowed_hosts=["hooks.internal", "localhost"])
    submit(app, "ci-bot", job_spec(dataset, webhook={"url": "http://localhost:9/h"}))
    submit(app, "ci-bot", job_spec(dataset, webhook={"url": "https://hooks.internal/h"}))


def test_the_request_goes_to_the_address_that_was_checked() -> None:
    """No second DNS lookup: the connection is made to the resolved address, with the name
    as the Host header (and, for https, the TLS server name)."""
    from service.jobs.egress import check_target, post

    seen: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        target = check_target(f"http://localhost:{port}/h?x=1", ["localhost"])
        assert target.address in ("127.0.0.1", "::1") and target.path == "/h?x=1"
        target = type(target)(target.scheme, target.host, port, "127.0.0.1", target.path)
        import threading

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                seen.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        assert post(target, b"{}", {}, 5.0) == 204
        thread.join()
    assert (
        seen[0].startswith(b"POST /h?x=1 HTTP/1.1")
        and f"Host: localhost:{port}".encode() in seen[0]
    )


# secure defaults: data
def test_no_local_data_is_allowed_by_default(
    make_app: Callable[..., Flask], dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCANTUNE_LOCAL_DATA_ROOTS")
    app = make_app()
    for uri in (str(dataset), "/", "/etc/passwd", f"file://{dataset}"):
        problem = submit(app, "ci-bot", job_spec(uri), 422)
        assert problem["errors"][0]["type"] == "uri_not_allowed"
        assert "does not exist" not in problem["detail"]


def test_a_symlink_out_of_a_root_is_refused(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    root, outside = training_env / "root", training_env / "outside"
    (root / "set" / "normal").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "set" / "normal" / "a.png").symlink_to(outside / "secret.png")
    (root / "ok" / "normal").mkdir(parents=True)
    (root / "ok" / "normal" / "a.png").write_bytes(b"x")
    app = make_app(local_data_roots=[str(root)])
    refused = job_spec(root / "set")
    refused["dataset"]["format"] = "imagefolder"
    problem = submit(app, "ci-bot", refused, 422)
    assert problem["errors"][0]["type"] == "uri_not_allowed"
    allowed = job_spec(root / "ok")
    allowed["dataset"]["format"] = "imagefolder"
    submit(app, "ci-bot", allowed)


def test_s3_data_is_allowed_only_under_configured_prefixes(
    make_app: Callable[..., Flask], s3_bucket: str, s3_env: dict[str, str]
) -> None:
    from models.uri import s3_client

    client = s3_client(s3_env["SCANTUNE_S3_ENDPOINT_URL"])
    client.put_object(Bucket=s3_bucket, Key="teams/ci/a.npz", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key="teams/cix/a.npz", Body=b"x")
    app = make_app(s3_data_prefixes=[f"s3://{s3_bucket}/teams/ci/"])
    submit(app, "ci-bot", job_spec(f"s3://{s3_bucket}/teams/ci/a.npz"))
    for uri in (
        f"s3://{s3_bucket}/",  # the whole bucket
        f"s3://{s3_bucket}/teams/cix/a.npz",  # a sibling that shares the prefix's letters
        f"s3://{s3_bucket}/teams/ci/../cix/a.npz",
        "s3://someone-elses-bucket/data.npz",
    ):
        problem = submit(app, "ci-bot", job_spec(uri), 422)
        assert problem["errors"][0]["type"] == "uri_not_allowed", uri
    refusals = audit(app, action="job_submitted")
    assert [r["outcome"] for r in refusals].count("refused") == 4
    assert "someone-elses-bucket" not in json.dumps(refusals)


def test_gpus_per_job_are_capped(make_app: Callable[..., Flask], dataset: Path) -> None:
    app = make_app(max_gpus_per_job=1)
    problem = submit(app, "ci-bot", job_spec(dataset, resources={"gpus": 8}), 422)
    assert problem["errors"][0]["loc"] == "body/resources/gpus"


# limits
def test_job_submissions_are_rate_limited_per_client(
    make_app: Callable[..., Flask], dataset: Path
) -> None:
    app = make_app(rate_limits={"jobs": "2/hour"})
    submit(app, "ci-bot", job_spec(dataset))
    submit(app, "ci-bot", job_spec(dataset, epochs=2))
    response = as_(app, "ci-bot").post(JOBS, json=job_spec(dataset, epochs=3))
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    submit(app, "radiology-bot", job_spec(dataset))  # another client has its own budget
    [limited] = audit(app, action="rate_limited")
    assert (limited["client"], limited["target"]) == ("ci", "jobs")


def test_dry_runs_have_a_limit_of_their_own_or_count_as_submits(
    make_app: Callable[..., Flask], dataset: Path
) -> None:
    """A pipeline checks each spec before it submits: with `job_checks` set, its checks do not
    spend its submits; without, a dry run counts under `jobs` like the submit it rehearses."""
    check = {"dry_run": "true"}
    apart = as_(make_app(rate_limits={"jobs": "1/hour", "job_checks": "2/hour"}), "ci-bot")
    for epochs in (1, 2):
        assert apart.post(JOBS, json=job_spec(dataset, epochs=epochs),
                          query_string=check).status_code == 200  # fmt: skip
    assert apart.post(JOBS, json=job_spec(dataset), query_string=check).status_code == 429
    assert apart.post(JOBS, json=job_spec(dataset)).status_code == 202  # its submit still free
    assert apart.post(JOBS, json=job_spec(dataset, epochs=2)).status_code == 429

    together = as_(make_app(rate_limits={"jobs": "1/hour"}), "ci-bot")
    assert together.post(JOBS, json=job_spec(dataset), query_string=check).status_code == 200
    assert together.post(JOBS, json=job_spec(dataset)).status_code == 429


def test_a_bad_rate_limit_setting_is_refused_at_start(
    training_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from service.config import TrainingSettings

    monkeypatch.setenv("SCANTUNE_RATE_LIMITS", '{"jobs": "many per day"}')
    with pytest.raises(ValidationError, match="rate_limits"):
        TrainingSettings()


# the audit trail
def test_refused_keys_and_denied_scopes_are_audited(app: Flask) -> None:
    assert app.test_client().get(JOBS, headers=bearer("nobody")).status_code == 401
    assert as_(app, "ci-reader").post(JOBS, json={}).status_code == 403
    [refused] = audit(app, action="key_refused")
    assert (refused["client"], refused["outcome"]) == ("unknown", "refused")
    assert "secret-of" not in json.dumps(refused)
    [denied] = audit(app, action="access_denied")
    assert denied["client"] == "ci" and denied["target"] == "POST /v1/training-jobs"
    assert denied["request_id"]


def test_the_audit_trail_is_for_admins_filtered_and_paged(app: Flask, dataset: Path) -> None:
    for epochs in (1, 2, 3):
        submit(app, "ci-bot", job_spec(dataset, epochs=epochs))
    assert as_(app, "ci-bot").get("/v1/audit").status_code == 403
    ops = as_(app, "ops")
    first = ops.get("/v1/audit", query_string={"action": "job_submitted", "limit": 2}).get_json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = ops.get(
        "/v1/audit", query_string={"action": "job_submitted", "cursor": first["next_cursor"]}
    ).get_json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    seen = [r["target"] for r in first["items"] + rest["items"]]
    assert len(set(seen)) == 3 and all(t.startswith("job/") for t in seen)
    assert ops.get("/v1/audit", query_string={"client": "radiology"}).get_json()["items"] == []


@pytest.mark.parametrize("path", [JOBS, "/v1/audit"])
def test_a_huge_page_cursor_is_a_4xx(app: Flask, path: str) -> None:
    key = "seq" if path == JOBS else "audit"
    cursor = base64.urlsafe_b64encode(json.dumps({key: 10**30}).encode()).decode().rstrip("=")
    response = as_(app, "ops").get(path, query_string={"cursor": cursor})
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["loc"] == "query/cursor"


# misc
def test_readyz_says_what_failed_but_not_why(
    make_app: Callable[..., Flask], training_env: Path
) -> None:
    app = make_app(
        artifact_uri="s3://secret-bucket-name-here/p", s3_endpoint_url="http://127.0.0.1:9"
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["artifact_store"] == "failed"
    assert "secret-bucket-name-here" not in response.get_data(as_text=True)


def test_logs_are_json_lines_with_the_request_id(app: Flask, dataset: Path) -> None:
    import io
    import logging

    from service.config import TrainingSettings
    from service.logs import configure_logging

    stream = io.StringIO()
    configure_logging(TrainingSettings(log_format="json"), stream=stream)
    try:
        response = as_(app, "ci-bot").post(JOBS, json=job_spec(dataset))
    finally:
        configure_logging(TrainingSettings(log_format="text"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    rid = response.headers["X-Request-Id"]
    mine = [line for line in lines if line.get("request_id") == rid]
    assert {"timestamp", "level", "logger", "message"} <= set(mine[0])
    [entry] = [line["audit"] for line in mine if line["logger"] == "scantune.audit"]
    assert (entry["action"], entry["client"], entry["request_id"]) == ("job_submitted", "ci", rid)
    assert logging.getLogger().handlers  # the handler was replaced, not lost


def test_rate_limits_are_shared_by_gunicorn_workers_through_redis(
    training_env: Path, tmp_path: Path
) -> None:
    """Two workers, one Redis: the client's budget is one, whichever worker answers."""
    import os
    import signal
    import subprocess
    import sys
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import requests

    from tests.conftest import REPO, free_port, wait_for_port

    keys = [
        {"name": n, "client": c, "sha256": hash_key(f"secret-of-{n}"), "scopes": s}
        for n, (c, s) in TENANT_KEYS.items()
    ]
    env = {
        **os.environ,
        "SCANTUNE_API_KEYS": json.dumps(keys),
        "SCANTUNE_RATE_LIMITS": '{"jobs": "4/minute"}',
        "SCANTUNE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "SCANTUNE_RATE_LIMIT_PREFIX": f"test-{uuid.uuid4().hex}",  # nobody else's counters
        "SCANTUNE_LOG_FORMAT": "json",
    }
    port, log_path = free_port(), tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "service.training_api:create_app()"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(port, timeout=60, proc=proc)

            def post(_: int) -> requests.Response:
                return requests.post(
                    f"http://127.0.0.1:{port}{JOBS}", json={}, headers=bearer("ci-bot"), timeout=30
                )

            # Bursts until both workers have answered (a sync worker may take a whole burst).
            answers: list[requests.Response] = []
            while len(workers_seen(log_path)) < 2 and len(answers) < 240:
                with ThreadPoolExecutor(6) as pool:
                    answers += pool.map(post, range(12))
            other = requests.post(
                f"http://127.0.0.1:{port}{JOBS}", json={}, headers=bearer("radiology-bot")
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    codes = [a.status_code for a in answers]
    assert len(workers_seen(log_path)) == 2, "both workers answered"
    assert codes.count(422) == 4 and codes.count(429) == len(codes) - 4  # one shared budget
    assert all(int(a.headers["Retry-After"]) >= 1 for a in answers if a.status_code == 429)
    assert other.status_code == 422  # another client's budget is untouched


def workers_seen(log_path: Path) -> set[int]:
    """The processes that logged an answer to a job submission (JSON log lines)."""
    seen = set()
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if (
                entry["logger"] == "scantune.access"
                and "route=/v1/training-jobs" in entry["message"]
            ):
                seen.add(int(entry["process"]))
    return seen


def test_keys_new_makes_a_key_of_a_client(capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main
    from service.config import ApiKey

    assert (
        main(["keys", "new", "--name", "pacs-1", "--client", "radiology", "--scope", "predict"])
        == 0
    )
    out = capsys.readouterr().out
    key = out.split("it is not stored anywhere): ", 1)[1].split()[0]
    entry = ApiKey.model_validate_json(out.split("SCANTUNE_API_KEYS entry: ", 1)[1])
    assert (entry.name, entry.owner, entry.scopes) == ("pacs-1", "radiology", ["predict"])
    assert entry.sha256 == hash_key(key)
    main(["keys", "new", "--name", "ci", "--scope", "read", "--scope", "admin"])
    plain = ApiKey.model_validate_json(capsys.readouterr().out.split("entry: ", 1)[1])
    assert plain.owner == "ci" and plain.scopes == ["admin", "read"]


def test_scantune_up_allows_data_only_under_its_own_folder_and_the_roots_it_is_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.commands.serve import _local_data_roots

    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {}
    _local_data_roots(env, [])
    assert json.loads(env["SCANTUNE_LOCAL_DATA_ROOTS"]) == [str(tmp_path)]
    assert str(tmp_path) in capsys.readouterr().out  # said aloud
    (tmp_path.parent / "shared").mkdir(exist_ok=True)
    given: dict[str, str] = {}
    _local_data_roots(given, [Path("../shared")])
    expected = [str(tmp_path), str((tmp_path.parent / "shared").resolve())]
    assert json.loads(given["SCANTUNE_LOCAL_DATA_ROOTS"]) == expected
    chosen = {"SCANTUNE_LOCAL_DATA_ROOTS": '["/scans"]'}
    _local_data_roots(chosen, [Path("/elsewhere")])
    assert chosen["SCANTUNE_LOCAL_DATA_ROOTS"] == '["/scans"]'


def test_study_uids_appear_only_as_salted_hashes() -> None:
    from service.audit import hash_uid

    uid = "1.2.826.0.1.3680043.8.498.12345"
    assert hash_uid(uid, "salt-a") == hash_uid(uid, "salt-a")
    assert hash_uid(uid, "salt-a") != hash_uid(uid, "salt-b")
    assert uid not in hash_uid(uid, "salt-a") and len(hash_uid(uid, "salt-a")) == 32


def test_the_key_ring_works_outside_a_request() -> None:
    """Other front doors (the DICOM node) check keys with the same KeyRing."""
    from service.auth import KeyRing
    from service.config import ApiKey
    from service.errors import Forbidden, Unauthorized

    ring = KeyRing([ApiKey(name="pacs", sha256=hash_key("k"), scopes=["predict"])])
    assert ring.authenticate("k", "predict") is not None
    with pytest.raises(Unauthorized):
        ring.authenticate("wrong", "predict")
    with pytest.raises(Forbidden):
        ring.authenticate("k", "admin")
