"""The plumbing both apps share: problem bodies, auth scopes, request ids, limits, health."""

from __future__ import annotations

import json

import pytest
from flask import Flask, request
from pydantic import BaseModel

from service.auth import hash_key, require
from service.config import CommonSettings
from service.errors import Conflict
from service.web import add_readiness_check, create_base_app


class Body(BaseModel):
    count: int


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    keys = [
        {"name": "reader", "sha256": hash_key("r-key"), "scopes": ["read"]},
        {"name": "writer", "sha256": hash_key("w-key"), "scopes": ["read", "jobs:write"]},
    ]
    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps(keys))
    monkeypatch.setenv("SCANTUNE_MAX_UPLOAD_MB", "0.001")
    app = create_base_app(__name__, CommonSettings(), service="test")

    @app.post("/things")
    @require("jobs:write")
    def make_thing():
        return {"count": Body.model_validate(request.get_json()).count}

    @app.get("/conflict")
    @require("read")
    def conflict():
        raise Conflict("job 7 has already finished")

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    return app


def test_auth_requires_a_key_and_the_scope(app):
    client = app.test_client()
    missing = client.post("/things", json={"count": 1})
    assert missing.status_code == 401 and missing.mimetype == "application/problem+json"
    assert "WWW-Authenticate" in missing.headers
    assert (
        client.post("/things", json={"count": 1}, headers={"X-API-Key": "nope"}).status_code == 401
    )
    wrong_scope = client.post(
        "/things", json={"count": 1}, headers={"Authorization": "Bearer r-key"}
    )
    assert wrong_scope.status_code == 403 and "jobs:write" in wrong_scope.json["detail"]
    ok = client.post("/things", json={"count": 1}, headers={"Authorization": "Bearer w-key"})
    assert ok.status_code == 200 and ok.json == {"count": 1}


def test_validation_errors_carry_locations(app):
    response = app.test_client().post(
        "/things", json={"count": "many"}, headers={"X-API-Key": "w-key"}
    )
    assert response.status_code == 422
    body = response.json
    assert body["status"] == 422 and body["errors"][0]["loc"] == "body/count"
    assert set(body) >= {"type", "title", "status", "detail"}


def test_service_errors_and_unexpected_ones(app):
    client = app.test_client()
    conflict = client.get("/conflict", headers={"X-API-Key": "r-key"})
    assert conflict.status_code == 409 and conflict.json["detail"] == "job 7 has already finished"
    boom = client.get("/boom")
    assert boom.status_code == 500 and "secret" not in boom.get_data(as_text=True)
    assert "Traceback" not in boom.get_data(as_text=True)
    assert client.get("/absent").json["status"] == 404
    assert client.delete("/things").status_code == 405


def test_body_limit_request_ids_health_and_metrics(app):
    client = app.test_client()
    too_big = client.post(
        "/things", data=b"x" * 5000, headers={"X-API-Key": "w-key"}, content_type="application/json"
    )
    assert too_big.status_code == 413 and too_big.mimetype == "application/problem+json"
    echoed = client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["X-Request-Id"] == "abc-123" and echoed.json == {"status": "ok"}
    assert len(client.get("/healthz").headers["X-Request-Id"]) == 32
    assert client.get("/readyz").status_code == 200
    assert b"scantune_http_requests_total" in client.get("/metrics").data


def test_readiness_reports_the_failing_check(app):
    def database() -> None:
        raise ConnectionError("connection refused")

    add_readiness_check(app, "database", database)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "failed"  # which, never why: it is open
    assert "connection refused" not in response.get_data(as_text=True)


def test_auth_can_be_disabled_explicitly(monkeypatch):
    monkeypatch.setenv("SCANTUNE_AUTH_DISABLED", "true")
    app = create_base_app(__name__, CommonSettings(), service="test")

    @app.get("/open")
    @require("read")
    def open_view():
        return {"ok": True}

    assert app.test_client().get("/open").status_code == 200
