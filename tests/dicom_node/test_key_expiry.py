"""The DICOM node's HTTP routes (STOW-RS, its own API) refuse a key past its `expires`,
audited, by the clock of each request; and the node exports each key's expiry. Its DICOM
associations are checked by AE title and address (scp.CallerList), not by keys."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.auth import hash_key
from tests.service.key_clock import at, expiry_gauges, set_clock

KEYS = [
    {"name": "modality-gw", "sha256": hash_key("k-stow"), "scopes": ["predict"],
     "expires": "2030-01-31"},
    {"name": "ops", "client": "it", "sha256": hash_key("k-ops"), "scopes": ["series:read"],
     "expires": "2030-06-30T10:00:00Z"},
]  # fmt: skip


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    from service.dicom_node.app import create_app

    settings = {
        "database_url": f"sqlite:///{tmp_path / 'node.db'}",
        "dicom_spool_dir": str(tmp_path / "spool"),
        "dicom_routes": json.dumps([{"model": "chest-xray", "modality": "CR"}]),
        "api_keys": json.dumps(KEYS),
    }
    for name, value in settings.items():
        monkeypatch.setenv(f"SCANTUNE_{name.upper()}", value)
    monkeypatch.delenv("SCANTUNE_AUTH_DISABLED", raising=False)
    app = create_app(start=False)
    app.testing = True
    return app


def stow(app: Flask, secret: str) -> Any:
    return app.test_client().post(
        "/dicomweb/studies",
        data=b"--b--\r\n",
        content_type='multipart/related; type="application/dicom"; boundary=b',
        headers={"Authorization": f"Bearer {secret}"},
    )


def test_an_expired_key_cannot_store_and_is_audited(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    set_clock(app, "2030-03-01T00:00:00Z")
    with caplog.at_level(logging.INFO, "scantune.audit"):
        refused = stow(app, "k-stow")
    assert refused.status_code == 401 and refused.mimetype == "application/problem+json"
    assert refused.get_json()["detail"] == (
        "the API key 'modality-gw' expired at 2030-02-01T00:00:00Z: its holder needs a new one"
    )
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token",'
        ' error_description="the API key expired at 2030-02-01T00:00:00Z"'
    )
    [record] = [r.audit for r in caplog.records if r.name == "scantune.audit"]  # type: ignore[attr-defined]
    said = (record["action"], record["client"], record["target"], record["outcome"])
    assert said == ("key_expired", "modality-gw", "POST /dicomweb/studies", "refused")
    assert "k-stow" not in caplog.text


def test_a_key_is_refused_once_the_clock_passes_its_expiry(app: Flask) -> None:
    client = app.test_client()
    headers = {"X-API-Key": "k-ops"}
    set_clock(app, "2030-06-30T09:59:59Z")
    assert client.get("/v1/series", headers=headers).status_code == 200
    set_clock(app, "2030-06-30T10:00:00Z")
    refused = client.get("/v1/series", headers=headers)
    assert refused.status_code == 401
    assert "'ops' expired at 2030-06-30T10:00:00Z" in refused.get_json()["detail"]


def test_each_key_s_expiry_is_a_gauge(app: Flask) -> None:
    assert expiry_gauges(app) == {
        "modality-gw": at("2030-02-01T00:00:00Z"),
        "ops": at("2030-06-30T10:00:00Z"),
    }
