"""The inference service refuses a key past its `expires` on every route that checks keys
(v1 and V2), audited, by the clock of each request; and exports each key's expiry."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.auth import hash_key
from tests.inference.conftest import MODEL, validate_response
from tests.service.key_clock import at, expiry_gauges, set_clock

PREDICT = f"/v1/models/{MODEL}:predict"
KEYS = [
    {"name": "pacs-1", "client": "radiology", "sha256": hash_key("k-pacs"),
     "scopes": ["predict"], "expires": "2030-01-31"},
    {"name": "gateway", "sha256": hash_key("k-gateway"), "scopes": ["predict"],
     "expires": "2030-06-30T10:00:00Z"},
]  # fmt: skip


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The service over an empty registry: keys are checked before any model is looked up."""
    from service.inference import EXTENSION, create_app

    monkeypatch.setenv("SCANTUNE_ARTIFACT_URI", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps(KEYS))
    monkeypatch.setenv("SCANTUNE_ALIAS_POLL_INTERVAL_S", "3600")
    monkeypatch.delenv("SCANTUNE_AUTH_DISABLED", raising=False)
    (tmp_path / "artifacts").mkdir()
    app = create_app()
    app.testing = True
    yield app
    app.extensions[EXTENSION].manager.stop()


def predict(app: Flask, openapi: Any, secret: str, path: str = PREDICT) -> Any:
    response = app.test_client().post(
        path, data=b"not a scan", content_type="image/png", headers={"X-API-Key": secret}
    )
    validate_response(openapi, response)
    return response


def test_an_expired_key_is_refused_on_v1_and_v2_and_audited(
    app: Flask, openapi: Any, caplog: pytest.LogCaptureFixture
) -> None:
    set_clock(app, "2030-03-01T12:00:00Z")
    with caplog.at_level(logging.INFO, "scantune.audit"):
        v1 = predict(app, openapi, "k-pacs")
        v2 = predict(app, openapi, "k-pacs", f"/v2/models/{MODEL}/infer")
    for refused in (v1, v2):
        assert refused.status_code == 401 and refused.mimetype == "application/problem+json"
        assert refused.get_json()["detail"] == (
            "the API key 'pacs-1' expired at 2030-02-01T00:00:00Z: its holder needs a new one"
        )
        assert refused.headers["WWW-Authenticate"].startswith(
            'Bearer error="invalid_token", error_description="the API key expired at 2030-02-01'
        )
    assert v2.get_json()["error"] == v2.get_json()["detail"]  # the V2 protocol's member
    audited = [r.audit for r in caplog.records if r.name == "scantune.audit"]  # type: ignore[attr-defined]
    records = [r for r in audited if r["action"] == "key_expired"]
    assert [(r["client"], r["target"], r["outcome"]) for r in records] == [
        ("radiology", f"POST {route}", "refused")
        for route in ("/v1/models/<name>:predict", "/v2/models/<name>/infer")
    ]
    assert records[0]["detail"]["detail"] == "the API key 'pacs-1' expired at 2030-02-01T00:00:00Z"
    assert "k-pacs" not in caplog.text


def test_a_key_is_refused_once_the_clock_passes_its_expiry(app: Flask, openapi: Any) -> None:
    set_clock(app, "2030-06-30T09:59:59Z")
    assert predict(app, openapi, "k-gateway").status_code == 404  # in: no such model here
    set_clock(app, "2030-06-30T10:00:00Z")
    refused = predict(app, openapi, "k-gateway")
    assert refused.status_code == 401
    assert "'gateway' expired at 2030-06-30T10:00:00Z" in refused.get_json()["detail"]


def test_each_key_s_expiry_is_a_gauge(app: Flask) -> None:
    assert expiry_gauges(app) == {
        "pacs-1": at("2030-02-01T00:00:00Z"),
        "gateway": at("2030-06-30T10:00:00Z"),
    }
