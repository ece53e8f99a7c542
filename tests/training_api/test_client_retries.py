"""The Python client sends a request again when the service said it did not act on it: a
submit over the client's rate limit waits the Retry-After the training service gives and goes
through; a wait longer than the client will sleep comes back at once as the 429; a proxy's
502 is tried again for a read and never for a submit, which may have been queued."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from service.client import ApiError, Client
from tests.conftest import free_port
from tests.training_api.conftest import KEYS, job_spec


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """Serve a WSGI app on a loopback port; its base URL."""
    servers: list[Any] = []

    def start(app: Any) -> str:
        port = free_port()
        httpd = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{port}"

    yield start
    for httpd in servers:
        httpd.shutdown()


@pytest.fixture
def limited_app(training_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The training service allowing each client one job submit every 2 seconds."""
    from service.training_api import create_app, services

    monkeypatch.setenv("SCANTUNE_RATE_LIMITS", '{"jobs": "1 per 2 second"}')
    app = create_app(start_supervisor=False)
    yield app
    with app.app_context():
        services().jobs.stop()


def test_a_submit_over_the_rate_limit_waits_its_retry_after_and_goes_through(
    limited_app: Flask, serve: Callable[[Any], str], dataset: Path
) -> None:
    url = serve(limited_app)
    api = Client(url, KEYS["admin"].secret)
    first = api.submit_job(job_spec(dataset, model_name="retried-a"))
    started = time.monotonic()
    second = api.submit_job(job_spec(dataset, model_name="retried-b"))  # 429, then 202
    assert time.monotonic() - started >= 0.9  # the Retry-After (1-2 s) was waited out
    assert first["id"] != second["id"]
    assert {j["model_name"] for j in api.jobs()} == {"retried-a", "retried-b"}

    with pytest.raises(ApiError) as refused:  # told to wait, and not willing to
        Client(url, KEYS["admin"].secret, retries=0).submit_job(job_spec(dataset))
    assert refused.value.status == 429 and "retry in" in str(refused.value)
    impatient = Client(url, KEYS["admin"].secret, longest_wait_s=0.5)
    started = time.monotonic()
    with pytest.raises(ApiError) as refused:
        impatient.submit_job(job_spec(dataset))
    assert refused.value.status == 429 and time.monotonic() - started < 0.5  # no sleep at all
    assert len(api.jobs()) == 2


def test_a_proxys_bad_gateway_is_tried_again_for_a_read_never_for_a_submit(
    serve: Callable[[Any], str],
) -> None:
    calls: list[str] = []

    @Request.application  # type: ignore[arg-type]
    def gateway(request: Request) -> Response:
        """A proxy whose upstream answers every other request: the first try of each is a
        502 (for a POST, perhaps after the service queued it)."""
        calls.append(request.method)
        if len(calls) % 2:
            return Response("bad gateway", status=502)
        return Response('{"items": [], "next_cursor": null}', mimetype="application/json")

    api = Client(serve(gateway), "key")
    assert api.jobs() == []
    assert calls == ["GET", "GET"]
    with pytest.raises(ApiError) as failed:
        api.submit_job({"model_name": "x"})
    assert failed.value.status == 502 and calls[2:] == ["POST"]  # sent once: the caller decides
