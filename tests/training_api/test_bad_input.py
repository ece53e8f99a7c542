"""Bad input, table-driven: each request gets the right 4xx and a problem that says where."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.training_api.conftest import KEYS, job_spec

JOBS = "/v1/training-jobs"
MISSING = "/v1/training-jobs/00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Case:
    id: str
    status: int
    method: str = "POST"
    path: str = JOBS
    body: Callable[[Path], Any] | None = None  # JSON body built from the dataset path
    raw: bytes | None = None
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    key: str | None = "admin"
    loc: str | None = None  # expected in errors[].loc
    detail: str | None = None  # expected in detail (case-insensitive)


def spec_with(**overrides: Any) -> Callable[[Path], Any]:
    return lambda dataset: job_spec(dataset, **overrides)


def spec_without(name: str) -> Callable[[Path], Any]:
    def build(dataset: Path) -> Any:
        spec = job_spec(dataset)
        del spec[name]
        return spec

    return build


CASES = [
    Case("malformed-json", 400, raw=b'{"model_name": ', content_type="application/json",
         detail="not valid JSON"),
    Case("nested-too-deep", 400, raw=b"[" * 20_000, content_type="application/json",
         detail="nested too deeply"),
    Case("empty-body", 400, raw=b"", content_type="application/json", detail="empty"),
    Case("not-utf8", 400, raw=b"\xff\xfe{}", content_type="application/json", detail="UTF-8"),
    Case("text-plain", 415, raw=b"model_name: x", content_type="text/plain", detail="JSON"),
    Case("form-encoded", 415, raw=b"model_name=x", content_type="application/x-www-form-urlencoded",
         detail="application/json"),
    Case("no-content-type", 415, raw=b"{}", detail="JSON"),
    Case("array-body", 422, body=lambda d: [job_spec(d)], loc="body"),
    Case("wrong-type", 422, body=spec_with(epochs="many"), loc="body/epochs"),
    Case("out-of-range", 422, body=spec_with(image_size=4), loc="body/image_size"),
    Case("nested-wrong-type", 422, body=spec_with(recipe={"lr": "fast"}), loc="body/recipe/lr"),
    Case("missing-dataset-field", 422, body=spec_without("dataset"), loc="body/dataset"),
    Case("bad-model-name", 422, body=spec_with(model_name="Not A Name!"), loc="body/model_name"),
    Case("unknown-base-model", 422, body=spec_with(base_model="alexnet"), loc="body/base_model",
         detail="unknown base model"),
    Case("gate-on-a-typo", 422, body=spec_with(promote={"alias": "p", "min": {"val_acu": 0.9}}),
         loc="body/promote/min", detail="val_acu is not a figure the card records"),
    Case("gate-in-percent", 422, body=spec_with(promote={"alias": "p", "min": {"auc": 95}}),
         loc="body/promote/min", detail="auc lies between 0 and 1"),
    Case("gate-min-on-a-loss", 422,
         body=spec_with(promote={"alias": "p", "min": {"val_ece_calibrated": 0.05}}),
         loc="body/promote/min", detail="bound it in `max`"),
    Case("gate-on-a-threshold-of-three-classes", 422,
         body=lambda d: job_spec(d, promote={"alias": "p", "min_lower": {"sensitivity": 0.9}})
         | {"dataset": {"uri": str(d), "classes": ["a", "b", "c"]}},
         loc="body", detail="for two classes only; this dataset names 3"),
    Case("extra-field", 422, body=spec_with(colour="blue"), loc="body/colour",
         detail="extra inputs"),
    Case("bad-webhook-url", 422, body=spec_with(webhook={"url": "not a url"}),
         loc="body/webhook/url"),
    Case("dataset-does-not-exist", 422,
         body=lambda d: job_spec(d.parent / "nowhere" / "missing.npz"), loc="body/dataset/uri",
         detail="missing.npz"),
    Case("too-large", 413, raw=b'{"pad": "' + b"x" * 60_000 + b'"}',
         content_type="application/json", detail="larger"),
    Case("idempotency-key-too-long", 422, body=spec_with(), headers={"Idempotency-Key": "k" * 300},
         loc="header/Idempotency-Key"),
    Case("no-api-key", 401, body=spec_with(), key=None, detail="API key is required"),
    Case("unknown-api-key", 401, body=spec_with(), key="bogus", detail="not valid"),
    Case("read-scope-cannot-submit", 403, body=spec_with(), key="reader", detail="jobs:write"),
    Case("get-unknown-job", 404, method="GET", path=MISSING, detail="no training job"),
    Case("cancel-unknown-job", 404, path=f"{MISSING}/cancel", detail="no training job"),
    Case("logs-unknown-job", 404, method="GET", path=f"{MISSING}/logs", detail="no training job"),
    Case("list-no-api-key", 401, method="GET", key=None),
    Case("bad-cursor", 422, method="GET", path=f"{JOBS}?cursor=not-a-cursor", loc="query/cursor"),
    Case("limit-zero", 422, method="GET", path=f"{JOBS}?limit=0", loc="query/limit"),
    Case("limit-not-int", 422, method="GET", path=f"{JOBS}?limit=ten", loc="query/limit"),
    Case("limit-too-big", 422, method="GET", path=f"{JOBS}?limit=100000", loc="query/limit"),
    Case("unknown-status", 422, method="GET", path=f"{JOBS}?status=done", loc="query/status"),
    Case("bad-model-filter", 422, method="GET", path=f"{JOBS}?model=Bad%20Name",
         loc="query/model"),
    Case("unknown-query-param", 422, method="GET", path=f"{JOBS}?sort=asc", loc="query/sort"),
    Case("repeated-query-param", 422, method="GET", path=f"{JOBS}?limit=1&limit=2",
         loc="query/limit"),
    Case("negative-tail", 422, method="GET", path=f"{MISSING}/logs?tail=-1", loc="query/tail"),
    Case("unknown-model", 404, method="GET", path="/v1/models/nope/versions", detail="no model"),
    Case("unknown-model-version", 404, method="GET", path="/v1/models/nope/versions/1"),
    Case("alias-no-scope", 403, method="PUT", path="/v1/models/nope/aliases/production",
         body=lambda d: {"version": 1}, key="ci", detail="models:write"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_precise_problem(
    anonymous: FlaskClient, dataset: Path, case: Case
) -> None:
    headers = dict(case.headers)
    if case.key is not None:
        secret = KEYS[case.key].secret if case.key in KEYS else "not-a-key"
        headers["Authorization"] = f"Bearer {secret}"
    kwargs: dict[str, Any] = {"headers": headers}
    if case.body is not None:
        kwargs["data"] = json.dumps(case.body(dataset))
        kwargs["content_type"] = "application/json"
    elif case.raw is not None:
        kwargs["data"] = case.raw
        if case.content_type:
            kwargs["content_type"] = case.content_type

    response = anonymous.open(case.path, method=case.method, **kwargs)

    problem = response.get_json(force=True)
    assert response.status_code == case.status, problem
    assert response.mimetype == "application/problem+json"
    assert problem["status"] == case.status
    assert problem["title"] and problem["detail"]
    if case.loc is not None:
        assert case.loc in [e["loc"] for e in problem.get("errors", [])], problem
    if case.detail is not None:
        assert case.detail.lower() in problem["detail"].lower(), problem


def test_cancel_a_finished_job_is_409(client: FlaskClient, dataset: Path) -> None:
    job = client.post(JOBS, json=job_spec(dataset)).get_json()
    client.post(f"{JOBS}/{job['id']}/cancel")

    response = client.post(f"{JOBS}/{job['id']}/cancel")

    assert response.status_code == 409
    assert response.get_json()["title"] == "Illegal state transition"


def test_unknown_method_is_a_problem_not_html(app: Flask) -> None:
    response = FlaskClient(app).delete(JOBS, headers=KEYS["admin"].headers)  # not in the spec
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    ("roots", "where", "allowed"),
    [
        ("[]", "inside", False),  # only s3:// then
        ('["{tmp}/data"]', "inside", True),
        ('["{tmp}/data"]', "outside", False),
        ('["{tmp}/data"]', "symlink out", False),
        ('["{tmp}/data"]', "missing outside", False),  # refused before anything looks at it
    ],
)
def test_local_paths_outside_the_data_roots_are_refused_before_they_are_looked_at(
    training_env: Path, monkeypatch: pytest.MonkeyPatch, roots: str, where: str, allowed: bool
) -> None:
    data, elsewhere = training_env / "data", training_env / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    (data / "in.npz").write_bytes(b"x")
    (elsewhere / "out.npz").write_bytes(b"x")
    (data / "link.npz").symlink_to(elsewhere / "out.npz")
    uri = {
        "inside": data / "in.npz",
        "outside": elsewhere / "out.npz",
        "symlink out": data / "link.npz",
        "missing outside": elsewhere / "nothing.npz",
    }[where]
    monkeypatch.setenv("SCANTUNE_LOCAL_DATA_ROOTS", roots.replace("{tmp}", str(training_env)))
    problem = submitted(job_spec(uri), 202 if allowed else 422)
    if not allowed:
        assert problem["errors"] == [
            {
                "loc": "body/dataset/uri",
                "msg": f"{uri} is outside the folders jobs may read (SCANTUNE_LOCAL_DATA_ROOTS),"
                " or a link in it leads outside them",
                "type": "uri_not_allowed",
            }
        ]


@pytest.mark.parametrize(
    ("url", "accepted"),
    [("https://CI.example.org/hooks/scantune", True), ("http://169.254.169.254/latest", False)],
)
def test_webhooks_may_call_only_the_allowed_hosts(
    training_env: Path, monkeypatch: pytest.MonkeyPatch, dataset: Path, url: str, accepted: bool
) -> None:
    monkeypatch.setenv("SCANTUNE_WEBHOOK_ALLOWED_HOSTS", '["ci.example.org"]')
    problem = submitted(job_spec(dataset, webhook={"url": url}), 202 if accepted else 422)
    if not accepted:
        assert problem["errors"] == [
            {
                "loc": "body/webhook/url",
                "msg": "169.254.169.254 is a loopback, private, link-local or metadata address;"
                " allow it with SCANTUNE_WEBHOOK_ALLOWED_HOSTS",
                "type": "webhook_target_not_allowed",
            }
        ]


def submitted(spec: dict[str, Any], status: int) -> dict[str, Any]:
    """POST `spec` to an app built from the current SCANTUNE_* settings; the body, checked
    to come with `status`."""
    from service.training_api import create_app, services

    app = create_app(start_supervisor=False)
    try:
        response = app.test_client().post(JOBS, json=spec, headers=KEYS["admin"].headers)
    finally:
        with app.app_context():
            services().jobs.stop()
    body: dict[str, Any] = response.get_json()
    assert response.status_code == status, body
    return body
