"""The dashboard's shells and helpers in-process: headers, scopes, and the Try forwarder's
refusals (the browser test drives the whole of it)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient

from service.auth import hash_key
from tests.training_api.conftest import KEYS


@pytest.fixture
def plain(app: Flask) -> FlaskClient:
    """Not checked against the API contract: these routes are the dashboard's, not the API's."""
    return FlaskClient(app, Response)


@pytest.mark.parametrize(
    "path", ["/ui/", "/ui/jobs/abc-123", "/ui/models", "/ui/try", "/ui/audit", "/ui/dicom"]
)
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


NODE_KEYS = {  # the release's keys, which the training service and the node share
    "ops": ["series:read"],
    "operator": ["series:read", "admin"],
    "reader": ["read"],
    "fetcher": ["series:retrieve"],
}


def _bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}-secret"}


@pytest.fixture
def node_url(tmp_path: Path) -> Iterator[str]:
    from tests.dicom_node.parts import node_over_http

    with node_over_http(tmp_path, NODE_KEYS) as url:
        yield url


@pytest.fixture
def relay(
    training_env: Path, node_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FlaskClient]:
    """A client of the training service whose DICOM page relays to the node at `node_url`,
    with NODE_KEYS known to both."""
    from service.training_api import create_app, services

    keys = [{"name": n, "sha256": hash_key(f"{n}-secret"), "scopes": s}
            for n, s in NODE_KEYS.items()]  # fmt: skip
    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps(keys))
    monkeypatch.setenv("SCANTUNE_DICOM_NODE_URL", node_url)
    app = create_app(start_supervisor=False)
    try:
        yield FlaskClient(app, Response)
    finally:
        with app.app_context():
            services().jobs.stop()


def test_the_dicom_page_relays_the_nodes_series_with_the_users_key(relay: FlaskClient) -> None:
    client = relay
    me = client.get("/ui/api/whoami", headers=_bearer("ops"))
    assert me.json == {"name": "ops", "scopes": ["series:read"]}  # any valid key
    listed = client.get("/ui/api/series?state=receiving&junk=1", headers=_bearer("ops"))
    assert listed.status_code == 200, listed.get_data(as_text=True)
    (series,) = listed.json["items"]
    by_header = client.get("/ui/api/series", headers={"X-API-Key": "ops-secret"})
    assert by_header.json["items"] == [series]  # relayed as the bearer token it is
    assert (series["state"], series["instances"], series["model"]) == (
        "receiving", 2, "chest-xray",
    )  # fmt: skip
    bad = client.get("/ui/api/series?state=lost", headers=_bearer("ops"))
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    assert bad.json["errors"][0]["loc"].startswith("query")  # the node's own problem
    refused = client.get("/ui/api/series", headers=_bearer("reader"))
    assert refused.status_code == 403 and "series:read" in refused.json["detail"]
    send = f"/ui/api/series/{series['id']}/send-now"
    assert client.post(send, headers=_bearer("ops")).status_code == 403
    sent = client.post(send, headers=_bearer("operator"))
    assert sent.status_code == 200 and sent.json["id"] == series["id"]
    assert (
        client.post("/ui/api/series/999/send-now", headers=_bearer("operator")).status_code == 404
    )
    orders = client.get("/ui/api/orders?limit=5&junk=1", headers=_bearer("ops"))
    assert orders.status_code == 200 and orders.json == {"items": [], "next_cursor": None}
    assert client.get("/ui/api/orders", headers=_bearer("reader")).status_code == 403
    held = client.get("/ui/api/outcome-reports/exams?held=true", headers=_bearer("ops"))
    assert held.status_code == 200 and held.json == {"items": [], "next_cursor": None}
    assert client.get("/ui/api/outcome-reports/exams?held=maybe",
                      headers=_bearer("ops")).status_code == 422  # fmt: skip
    exams = client.get("/ui/api/outcome-reports/exams", headers=_bearer("reader"))
    assert exams.status_code == 403
    fetch = {"source": "pacs", "study_instance_uid": "1.2.3"}
    denied = client.post("/ui/api/retrievals", json=fetch, headers=_bearer("ops"))
    assert denied.status_code == 403 and "series:retrieve" in denied.json["detail"]
    asked = client.post("/ui/api/retrievals", json=fetch, headers=_bearer("fetcher"))
    assert asked.status_code == 422  # relayed: the node has no source of that name
    assert asked.json["detail"] == (
        "no source named 'pacs'; the sources: none is configured (SCANTUNE_DICOM_SOURCES)"
    )
    stop = "/ui/api/retrievals/7/cancel"
    assert client.post(stop, headers=_bearer("ops")).status_code == 403
    stopped = client.post(stop, headers=_bearer("fetcher"))
    assert stopped.status_code == 404 and stopped.json["detail"] == "no retrieval 7"


def test_the_dicom_page_relays_recalls_and_the_node_decides_who_may_recall(
    relay: FlaskClient,
) -> None:
    client = relay
    asked = {"model": "chest-xray", "version": 3, "reason": "misses effusions"}
    listed = client.get("/ui/api/recalls?limit=5&junk=1", headers=_bearer("ops"))
    assert listed.status_code == 200 and listed.json == {"items": []}
    denied = client.post("/ui/api/recalls", json=asked, headers=_bearer("ops"))
    assert denied.status_code == 403 and denied.mimetype == "application/problem+json"
    assert "'admin'" in denied.json["detail"]  # the node's own refusal, relayed
    refused = client.post("/ui/api/recalls", json=asked, headers=_bearer("reader"))
    assert refused.status_code == 403 and "series:read" in refused.json["detail"]
    bad = client.post("/ui/api/recalls", json={**asked, "version": 0},
                      headers=_bearer("operator"))  # fmt: skip
    assert bad.status_code == 422 and bad.json["errors"][0]["loc"] == "body/version"
    made = client.post("/ui/api/recalls", json=asked, headers=_bearer("operator"))
    assert made.status_code == 202, made.get_data(as_text=True)
    recall = made.json
    assert (recall["model"], recall["version"], recall["requested_by"]) == (
        "chest-xray", 3, "operator",
    )  # fmt: skip
    again = client.post("/ui/api/recalls", json={**asked, "reason": "another"},
                        headers=_bearer("operator"))  # fmt: skip
    assert again.status_code == 200 and again.json["reason"] == "misses effusions"
    (item,) = client.get("/ui/api/recalls", headers=_bearer("ops")).json["items"]
    assert item["id"] == recall["id"] and "open" not in item
    one = client.get(f"/ui/api/recalls/{recall['id']}", headers=_bearer("ops"))
    assert one.status_code == 200 and one.json["open"] == []
    assert client.get("/ui/api/recalls/99", headers=_bearer("ops")).status_code == 404
    assert client.get("/ui/api/recalls", headers=_bearer("reader")).status_code == 403
    retry = f"/ui/api/recalls/{recall['id']}/retry"
    assert client.post(retry, headers=_bearer("ops")).status_code == 403
    nothing = client.post(retry, headers=_bearer("operator"))  # relayed: nothing was refused
    assert nothing.status_code == 409 and "no refused withdrawal" in nothing.json["detail"]


def test_the_dicom_page_relays_a_lift_for_an_admin(relay: FlaskClient) -> None:
    client = relay
    asked = {"model": "chest-xray", "version": 3, "reason": "misses effusions"}
    recall = client.post("/ui/api/recalls", json=asked, headers=_bearer("operator")).json
    lift = f"/ui/api/recalls/{recall['id']}/lift"
    denied = client.post(lift, json={"reason": "a mistake"}, headers=_bearer("ops"))
    assert denied.status_code == 403 and "'admin'" in denied.json["detail"]
    bad = client.post(lift, json={"reason": "a mistake", "by": "x"}, headers=_bearer("operator"))
    assert bad.status_code == 422 and bad.json["errors"][0]["loc"] == "body/by"  # the node's
    lifted = client.post(lift, json={"reason": "a mistake"}, headers=_bearer("operator"))
    assert lifted.status_code == 200, lifted.get_data(as_text=True)
    assert (lifted.json["state"], lifted.json["lifted_by"]) == ("lifted", "operator")
    again = client.post(lift, json={"reason": "a mistake"}, headers=_bearer("operator"))
    assert again.status_code == 409 and "lifted already" in again.json["detail"]
    unknown = client.post("/ui/api/recalls/99/lift", json={"reason": "x"},
                          headers=_bearer("operator"))  # fmt: skip
    assert unknown.status_code == 404


def test_the_dicom_page_relays_a_purge_and_the_node_decides_who_may_purge(
    relay: FlaskClient,
) -> None:
    client = relay
    (series,) = client.get("/ui/api/series", headers=_bearer("ops")).json["items"]
    asked = {"study_instance_uid": series["study_instance_uid"], "reason": "the wrong patient"}
    assert client.get("/ui/api/purges?limit=5&junk=1", headers=_bearer("ops")).json == {"items": []}
    denied = client.post("/ui/api/purges", json=asked, headers=_bearer("ops"))
    assert denied.status_code == 403 and "'admin'" in denied.json["detail"]  # the node's own
    refused = client.post("/ui/api/purges", json=asked, headers=_bearer("reader"))
    assert refused.status_code == 403 and "series:read" in refused.json["detail"]
    bad = client.post("/ui/api/purges", json={**asked, "reason": ""}, headers=_bearer("operator"))
    assert bad.status_code == 422 and bad.json["errors"][0]["loc"] == "body/reason"
    made = client.post("/ui/api/purges", json=asked, headers=_bearer("operator"))
    assert made.status_code == 202, made.get_data(as_text=True)
    assert (made.json["state"], made.json["requested_by"]) == ("new", "operator")
    assert asked["study_instance_uid"] not in made.get_data(as_text=True)
    (item,) = client.get("/ui/api/purges", headers=_bearer("ops")).json["items"]
    assert item == made.json
    assert client.get("/ui/api/purges", headers=_bearer("reader")).status_code == 403


def test_the_dicom_page_says_when_the_node_is_unset_or_down(
    training_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.training_api import create_app, services

    keys = [{"name": "ops", "sha256": hash_key("ops-secret"), "scopes": ["series:read"]}]
    monkeypatch.setenv("SCANTUNE_API_KEYS", json.dumps(keys))
    for url, detail in (
        (None, "SCANTUNE_DICOM_NODE_URL"),
        ("http://127.0.0.1:9", "cannot be reached"),
    ):
        if url is None:
            monkeypatch.delenv("SCANTUNE_DICOM_NODE_URL", raising=False)
        else:
            monkeypatch.setenv("SCANTUNE_DICOM_NODE_URL", url)
        app = create_app(start_supervisor=False)
        try:
            answer: Any = FlaskClient(app, Response).get("/ui/api/series", headers=_bearer("ops"))
            assert answer.status_code == 503 and detail in answer.json["detail"]
        finally:
            with app.app_context():
                services().jobs.stop()
