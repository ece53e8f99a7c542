"""One path answers every predict request: the Flask view. What the express lane that used to
stand in front of it was checked for still holds, now for every request: each kind of body is
answered, every refusal has the problem shape, keys are checked before the body is parsed,
and each request is counted and logged once, by the app's own hooks."""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from flask import Response
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder

from service.auth import hash_key
from tests.inference.conftest import MODEL

PREDICT = f"/v1/models/{MODEL}:predict"
ROUTE = "/v1/models/<name>:predict"
BOUNDARY = "pathboundary"


def multipart(*files: tuple[str, bytes], field: str = "file", newline: bytes = b"\r\n") -> bytes:
    """A multipart body as HTTP client libraries write it (or with other line ends)."""
    out = b""
    for name, data in files:
        out += (
            f"--{BOUNDARY}".encode() + newline
            + f'Content-Disposition: form-data; name="{field}"; filename="{name}"'.encode()
            + newline + b"Content-Type: application/octet-stream" + newline + newline
            + data + newline
        )  # fmt: skip
    return out + f"--{BOUNDARY}--".encode() + newline


@pytest.fixture
def make_app(make_client: Any) -> Callable[..., Any]:
    """The inference app (a Flask app), built through the factory with extra settings."""

    def make(**env: str) -> Any:
        return make_client(**env).application

    return make


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


def call(
    app: Callable[..., Iterable[bytes]],
    body: bytes,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
    *,
    path: str = PREDICT,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request through a WSGI app, as gunicorn makes it: status, headers, body."""
    environ = EnvironBuilder(
        path=path,
        method="POST",
        query_string=query,
        data=body,
        content_type=content_type,
        headers={"X-Request-Id": "req-path-test", **(headers or {})},
    ).get_environ()
    started: list[Any] = []
    out = b"".join(app(environ, lambda status, hdrs, exc=None: started.extend([status, hdrs])))
    return int(started[0].split()[0]), dict(started[1]), out


def scan(fixtures: Path, name: str) -> bytes:
    return (fixtures / name).read_bytes()


PLAIN = {  # requests answered with a 200: (body, content type, query) from the fixtures
    "one file": (lambda f: multipart(("normal_0.png", scan(f, "normal_0.png"))), None, ""),
    "three files, three formats": (
        lambda f: multipart(
            ("a.png", scan(f, "pneumonia_0.png")),
            ("b.jpg", scan(f, "normal_1.jpg")),
            ("c.dcm", scan(f, "pneumonia_1_rescale.dcm")),
        ),
        None,
        "",
    ),
    "raw PNG body": (lambda f: scan(f, "big_pneumonia_0.png"), "image/png", ""),
    "JSON base64": (
        lambda f: json.dumps(
            {
                "instances": [
                    {"b64": base64.b64encode(scan(f, "normal_1.png")).decode(), "name": "n1.png"},
                    {"b64": base64.b64encode(scan(f, "pneumonia_0.jpg")).decode()},
                ]
            }
        ).encode(),
        "application/json",
        "",
    ),
    "raw DICOM body": (lambda f: scan(f, "normal_0_mono1.dcm"), "application/dicom", ""),
    "alias and top_k": (
        lambda f: multipart(("n.png", scan(f, "normal_0_16.png"))),
        None,
        "alias=production&top_k=1",
    ),
    "version and explain": (
        lambda f: multipart(("p.png", scan(f, "pneumonia_1.png"))),
        None,
        "version=1&explain=true",
    ),
}


@pytest.mark.parametrize("kind", PLAIN)
def test_plain_predicts_are_answered_by_the_view(app: Any, fixture_images: Path, kind: str) -> None:
    body, content_type, query = PLAIN[kind]
    kwargs = {"content_type": content_type} if content_type else {}
    status, headers, answer = call(app, body(fixture_images), query=query, **kwargs)
    assert status == 200, answer
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Request-Id"] == "req-path-test"
    document = json.loads(answer)
    assert document["request_id"] == "req-path-test"
    assert document["model"]["name"] == MODEL
    assert document["timing_ms"].keys() == {"preprocess", "inference", "total"}
    assert answer.endswith(b"}\n") and b": " not in answer  # Flask's compact JSON


REFUSED = [  # (case, request change, expected status)
    ("bad query", {"query": "top_k=0"}, 422),
    ("version and alias", {"query": "version=1&alias=production"}, 422),
    ("repeated query parameter", {"query": "top_k=1&top_k=2"}, 422),
    ("unknown model", {"path": "/v1/models/nope:predict"}, 404),
    ("unknown version", {"query": "version=9"}, 404),
    ("no 'file' field", {"body": multipart(("a.png", b"x"), field="image")}, 400),
    ("not a scan", {"body": multipart(("a.txt", b"hello, not an image"))}, 422),
    ("JSON that is not", {"body": b'{"instances": [', "content_type": "application/json"}, 400),
    (
        "JSON without instances",
        {"body": b'{"images": []}', "content_type": "application/json"},
        400,
    ),
    ("bare LF line ends", {"newline": b"\n"}, 200),
    ("gzip-encoded body", {"gzip": True}, 200),
    ("text/plain body", {"content_type": "text/plain"}, 415),
    ("URL with a trailing slash", {"path": PREDICT + "/"}, 404),
]


@pytest.mark.parametrize(("case", "change", "status"), REFUSED, ids=[c[0] for c in REFUSED])
def test_every_other_request_gets_its_status_and_one_problem_shape(
    app: Any, fixture_images: Path, case: str, change: dict[str, Any], status: int
) -> None:
    png = scan(fixture_images, "normal_0.png")
    request: dict[str, Any] = {
        "body": multipart(("n.png", png), newline=change.get("newline", b"\r\n"))
    }
    request.update(
        {k: v for k, v in change.items() if k in ("body", "query", "path", "content_type")}
    )
    if change.get("gzip"):
        request["body"] = gzip.compress(request["body"])
        request["headers"] = {"Content-Encoding": "gzip"}
    got, headers, body = call(app, **request)
    assert got == status, body
    assert headers["X-Request-Id"] == "req-path-test"
    if status == 200:
        assert json.loads(body)["predictions"][0]["label"] in ("normal", "pneumonia")
    else:
        assert headers["Content-Type"] == "application/problem+json"
        assert json.loads(body)["request_id"] == "req-path-test"


def test_an_after_request_hook_sees_every_predict_answer(app: Any, fixture_images: Path) -> None:
    """What the two paths could not promise: a hook added to the app (security headers, CORS)
    applies to the 200s as to the refusals."""

    @app.after_request
    def _mark(response: Response) -> Response:
        response.headers["X-Hooked"] = "yes"
        return response

    good = multipart(("n.png", scan(fixture_images, "normal_0.png")))
    bad = multipart(("n.txt", b"not an image"))
    answers = [call(app, body) for body in (good, bad)]
    assert [a[0] for a in answers] == [200, 422]
    assert all(a[1].get("X-Hooked") == "yes" for a in answers)


def test_keys_are_checked_before_the_body_is_parsed(
    make_app: Any, fixture_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller without a key costs no multipart split or base64 decode."""
    from service.inference import v1

    keys = [
        {"name": "predictor", "sha256": hash_key("key-p"), "scopes": ["predict"]},
        {"name": "reader", "sha256": hash_key("key-r"), "scopes": ["read"]},
    ]
    app = make_app(auth_disabled="false", api_keys=json.dumps(keys))
    parsed: list[int] = []
    real = v1.read_uploads
    monkeypatch.setattr(
        v1, "read_uploads", lambda request, most: parsed.append(most) or real(request, most)
    )
    body = multipart(("n.png", scan(fixture_images, "normal_0.png")))
    answers = [
        call(app, body, headers=h)[0]
        for h in (
            {"Authorization": "Bearer key-p"},
            {"X-API-Key": "key-p"},
            {},
            {"Authorization": "Bearer wrong"},
            {"X-API-Key": "key-r"},
        )
    ]
    assert answers == [200, 200, 401, 401, 403]
    assert len(parsed) == 2  # the two accepted keys only


def test_a_body_over_the_upload_limit_is_413(make_app: Any, fixture_images: Path) -> None:
    app = make_app(max_upload_mb="0.01")  # 10 kB: the 44 kB scan is over it
    status, headers, _ = call(app, scan(fixture_images, "big_pneumonia_0.png"), "image/png")
    assert status == 413
    assert headers["Content-Type"] == "application/problem+json"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_request_is_counted_and_logged_once(
    app: Any, fixture_images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = multipart(("n.png", scan(fixture_images, "normal_0.png")))
    bad = multipart(("n.txt", b"not an image"))
    requests = ("scantune_inference_requests_total", {"model": MODEL, "version": "1"})
    http = (
        "scantune_http_requests_total",
        {"service": "inference", "method": "POST", "route": ROUTE},
    )

    def counts() -> dict[str, tuple[float, float]]:
        return {
            status: (
                _sample(requests[0], **requests[1], status=status),
                _sample(http[0], **http[1], status=status),
            )
            for status in ("200", "422")
        }

    before = counts()
    with caplog.at_level(logging.INFO, logger="scantune"):
        assert [call(app, b)[0] for b in (good, good, bad)] == [200, 200, 422]
    after = counts()
    assert after["200"][0] - before["200"][0] == 2 and after["200"][1] - before["200"][1] == 2
    assert after["422"][0] - before["422"][0] == 1 and after["422"][1] - before["422"][1] == 1
    predict_lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("predict ")
    ]
    access_lines = [r.getMessage() for r in caplog.records if f"route={ROUTE}" in r.getMessage()]
    assert [line.split("status=")[1][:3] for line in predict_lines] == ["200", "200", "422"]
    assert len(access_lines) == 3
    assert all("request_id=req-path-test" in line for line in predict_lines + access_lines)


def test_a_client_gone_mid_body_gets_a_problem_not_a_server_error(
    app: Any, fixture_images: Path
) -> None:
    """The body read fails (a socket timeout, a reset): a 400 problem, not a 500."""

    class Gone(io.RawIOBase):
        def readinto(self, buffer: Any) -> int:
            raise TimeoutError("timed out")

    body = multipart(("n.png", scan(fixture_images, "normal_0.png")))
    environ = EnvironBuilder(
        path=PREDICT,
        method="POST",
        data=body,
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    ).get_environ()
    environ["wsgi.input"] = Gone()
    started: list[Any] = []
    out = b"".join(app(environ, lambda status, headers, exc=None: started.append(status)))
    assert started[0][:3] == "400", out
    assert json.loads(out)["status"] == 400
