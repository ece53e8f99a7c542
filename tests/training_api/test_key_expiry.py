"""The training service refuses a key past its `expires` (401, a problem naming the key and
when, an audit record) by the clock of each request, and exports each key's expiry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from service.auth import hash_key
from tests.service.key_clock import at, expiry_gauges, set_clock
from tests.training_api.conftest import ContractClient

KEYS = [
    {"name": "ops", "client": "ops", "sha256": hash_key("k-ops"), "scopes": ["read", "admin"]},
    {"name": "ci-old", "client": "ci", "sha256": hash_key("k-old"), "scopes": ["read"],
     "expires": "2030-01-31"},
    {"name": "ci-new", "client": "ci", "sha256": hash_key("k-new"), "scopes": ["read"],
     "expires": "2030-06-30T12:00:00+02:00"},
]  # fmt: skip
JOBS = "/v1/training-jobs"


@pytest.fixture
def app(training_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    from service.training_api import create_app, services

    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps(KEYS))
    app = create_app(start_supervisor=False)
    app.test_client_class = ContractClient
    yield app
    with app.app_context():
        services().jobs.stop()


def get(app: Flask, secret: str, path: str = JOBS) -> TestResponse:
    return app.test_client().get(path, headers={"Authorization": f"Bearer {secret}"})


def test_an_expired_key_is_refused_with_its_name_and_when_and_audited(app: Flask) -> None:
    set_clock(app, "2030-03-01T00:00:00Z")
    refused = app.test_client().get(JOBS, headers={"X-API-Key": "k-old"})
    assert refused.status_code == 401 and refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert problem["title"] == "Unauthorized" and problem["status"] == 401
    assert problem["detail"] == (
        "the API key 'ci-old' expired at 2030-02-01T00:00:00Z: its holder needs a new one"
    )
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token",'
        ' error_description="the API key expired at 2030-02-01T00:00:00Z"'
    )
    assert get(app, "k-new").status_code == 200  # the client's other key still works
    records = get(app, "k-ops", "/v1/audit?action=key_expired").get_json()["items"]
    [record] = records
    said = (record["client"], record["target"], record["outcome"])
    assert said == ("ci", f"GET {JOBS}", "refused")
    assert record["detail"] == {"detail": "the API key 'ci-old' expired at 2030-02-01T00:00:00Z"}
    assert record["request_id"] == refused.headers["X-Request-Id"]
    assert "k-old" not in json.dumps(records)


def test_a_key_works_until_the_clock_passes_its_expiry(app: Flask) -> None:
    set_clock(app, "2030-06-30T09:59:59Z")  # 11:59:59 at +02:00
    assert get(app, "k-new").status_code == 200
    set_clock(app, "2030-06-30T10:00:00Z")
    refused = get(app, "k-new")
    assert refused.status_code == 401
    assert "'ci-new' expired at 2030-06-30T10:00:00Z" in refused.get_json()["detail"]
    assert get(app, "k-ops").status_code == 200  # no expiry: works on


def test_each_key_s_expiry_is_a_gauge(app: Flask) -> None:
    assert expiry_gauges(app) == {
        "ops": float("inf"),
        "ci-old": at("2030-02-01T00:00:00Z"),
        "ci-new": at("2030-06-30T10:00:00Z"),
    }
