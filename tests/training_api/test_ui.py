"""The dashboard's shells and helpers in-process: headers, scopes, and the Try forwarder's
refusals (the browser test drives the whole of it)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient

from tests.training_api.conftest import KEYS


@pytest.fixture
def plain(app: Flask) -> FlaskClient:
    """Not checked against the API contract: these routes are the dashboard's, not the API's."""
    return FlaskClient(app, Response)


@pytest.mark.parametrize("path", ["/ui/", "/ui/jobs/abc-123", "/ui/models", "/ui/try", "/ui/audit"])
def test_pages_are_served_under_a_strict_csp_without_a_key(plain: FlaskClient, path: str) -> None:
    response = plain.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe" not in csp
    html = response.get_data(as_text=True)
    assert 'data-testid="api-key"' in html and "<script>" not in html  # no inline script
    assert "Set-Cookie" not in response.headers


def test_the_charting_library_ships_with_its_license(plain: FlaskClient) -> None:
    js = plain.get("/ui/static/vendor/uplot/uPlot.iife.min.js")
    assert js.status_code == 200 and b"uPlot" in js.data
    assert b"MIT" in plain.get("/ui/static/vendor/uplot/LICENSE").data


def test_a_job_page_for_an_impossible_id_is_a_404_problem(plain: FlaskClient) -> None:
    response = plain.get("/ui/jobs/%3Cscript%3E")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_whoami_gives_the_scopes_the_controls_depend_on(plain: FlaskClient) -> None:
    assert plain.get("/ui/api/whoami").status_code == 401
    reader = plain.get("/ui/api/whoami", headers=KEYS["reader"].headers).json
    assert reader == {"name": "reader", "scopes": ["read"]}
    admin = plain.get("/ui/api/whoami", headers=KEYS["admin"].headers).json
    assert "models:write" in admin["scopes"]


def test_try_without_an_inference_url_says_so(plain: FlaskClient) -> None:
    def scan() -> dict[str, object]:
        return {"file": (io.BytesIO(b"\x89PNG..."), "scan.png")}

    response = plain.post("/ui/api/predict/x", data=scan(), headers=KEYS["reader"].headers)
    assert response.status_code == 503
    assert "SCANTUNE_INFERENCE_URL" in response.json["detail"]
    assert plain.post("/ui/api/predict/x", data=scan()).status_code == 401


def test_try_without_a_file_is_a_400(training_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.training_api import create_app, services

    monkeypatch.setenv("SCANTUNE_INFERENCE_URL", "http://127.0.0.1:9")
    app = create_app(start_supervisor=False)
    try:
        client = FlaskClient(app, Response)
        empty = client.post("/ui/api/predict/x", data={}, headers=KEYS["reader"].headers)
        assert empty.status_code == 400 and "'file'" in empty.json["detail"]
        down = client.post(
            "/ui/api/predict/x",
            data={"file": (io.BytesIO(b"x"), "s.png")},
            headers=KEYS["reader"].headers,
        )
        assert down.status_code == 503 and "cannot be reached" in down.json["detail"]
    finally:
        with app.app_context():
            services().jobs.stop()
