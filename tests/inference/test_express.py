"""The express lane (`service.inference.express`): it answers plain v1 predicts itself, with
the Flask view's answer, and gives every other request to Flask with its body intact."""

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
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder

from service.auth import hash_key
from service.inference.express import ROUTE, ExpressLane
from tests.inference.conftest import MODEL

PREDICT = f"/v1/models/{MODEL}:predict"
BOUNDARY = "expressboundary"


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


class Counting:
    """The lane's Flask app, counting the requests the lane hands it."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.calls = app, 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        return self.app(environ, start_response)


@pytest.fixture
def make_lane(make_client: Any) -> Callable[..., tuple[ExpressLane, Counting]]:
    def make(**env: str) -> tuple[ExpressLane, Counting]:
        lane = make_client(**env).application.wsgi_app
        assert isinstance(lane, ExpressLane)
        lane.flask = counting = Counting(lane.flask)
        return lane, counting

    return make


@pytest.fixture
def lane(make_lane: Any) -> tuple[ExpressLane, Counting]:
    lane: tuple[ExpressLane, Counting] = make_lane()
    return lane


def call(
    app: Callable[..., Iterable[bytes]],
    body: bytes,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
    *,
    path: str = PREDICT,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request through a WSGI app: status, headers, body."""
    environ = EnvironBuilder(
        path=path,
        method="POST",
        query_string=query,
        data=body,
        content_type=content_type,
        headers={"X-Request-Id": "req-express-test", **(headers or {})},
    ).get_environ()
    started: list[Any] = []
    out = b"".join(app(environ, lambda status, hdrs, exc=None: started.extend([status, hdrs])))
    return int(started[0].split()[0]), dict(started[1]), out


def scan(fixtures: Path, name: str) -> bytes:
    return (fixtures / name).read_bytes()


PLAIN = {  # the requests the lane answers: (body, content type, query) from the fixtures
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


def plain_request(fixtures: Path, kind: str) -> dict[str, Any]:
    body, content_type, query = PLAIN[kind]
    kwargs: dict[str, Any] = {"query": query}
    if content_type:
        kwargs["content_type"] = content_type
    return {"body": body(fixtures), **kwargs}


@pytest.mark.parametrize("kind", PLAIN)
def test_the_lane_answers_plain_predicts_without_flask(
    lane: tuple[ExpressLane, Counting], fixture_images: Path, kind: str
) -> None:
    express, flask = lane
    status, _, body = call(express, **plain_request(fixture_images, kind))
    assert status == 200, body
    assert flask.calls == 0
    assert json.loads(body)["model"]["name"] == MODEL


@pytest.mark.parametrize("kind", PLAIN)
def test_the_lanes_answer_is_the_flask_views(
    lane: tuple[ExpressLane, Counting], fixture_images: Path, kind: str
) -> None:
    express, flask = lane
    request = plain_request(fixture_images, kind)
    fast = call(express, **request)
    slow = call(flask, **request)
    assert flask.calls == 1  # the second call only
    assert fast[0] == slow[0] == 200
    headers = [{k: v for k, v in h.items() if k != "Content-Length"} for h in (fast[1], slow[1])]
    assert headers[0] == headers[1]
    assert headers[0]["X-Request-Id"] == "req-express-test"
    bodies = [json.loads(answer[2]) for answer in (fast, slow)]
    timings = [b.pop("timing_ms") for b in bodies]
    assert bodies[0] == bodies[1]
    assert timings[0].keys() == timings[1].keys() == {"preprocess", "inference", "total"}
    assert fast[2].endswith(b"}\n") and b": " not in fast[2]  # Flask's compact JSON


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body)


HANDED_OVER = [  # (case, request, expected status): the lane leaves each to Flask
    ("bad query", {"query": "top_k=0"}, 400),
    ("version and alias", {"query": "version=1&alias=production"}, 400),
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


@pytest.mark.parametrize(("case", "change", "status"), HANDED_OVER, ids=[c[0] for c in HANDED_OVER])
def test_requests_the_lane_cannot_answer_reach_flask_with_their_body(
    lane: tuple[ExpressLane, Counting],
    fixture_images: Path,
    case: str,
    change: dict[str, Any],
    status: int,
) -> None:
    express, flask = lane
    png = scan(fixture_images, "normal_0.png")
    request: dict[str, Any] = {
        "body": multipart(("n.png", png), newline=change.get("newline", b"\r\n"))
    }
    request.update(
        {k: v for k, v in change.items() if k in ("body", "query", "path", "content_type")}
    )
    if change.get("gzip"):
        request["body"] = _gzip(request["body"])
        request["headers"] = {"Content-Encoding": "gzip"}
    got, headers, body = call(express, **request)
    assert (got, flask.calls) == (status, 1), body
    if status == 200:
        assert json.loads(body)["predictions"][0]["label"] in ("normal", "pneumonia")
    else:
        assert headers["Content-Type"] == "application/problem+json"
        assert json.loads(body)["request_id"] == "req-express-test"


def test_keys_are_checked_on_the_lane_and_refusals_come_from_flask(
    make_lane: Any, fixture_images: Path
) -> None:
    keys = [
        {"name": "predictor", "sha256": hash_key("key-p"), "scopes": ["predict"]},
        {"name": "reader", "sha256": hash_key("key-r"), "scopes": ["read"]},
    ]
    express, flask = make_lane(auth_disabled="false", api_keys=json.dumps(keys))
    body = multipart(("n.png", scan(fixture_images, "normal_0.png")))
    answers = [
        call(express, body, headers=h)[0]
        for h in (
            {"Authorization": "Bearer key-p"},
            {"X-API-Key": "key-p"},
            {},
            {"Authorization": "Bearer wrong"},
            {"X-API-Key": "key-r"},
        )
    ]
    assert answers == [200, 200, 401, 401, 403]
    assert flask.calls == 3  # the refusals only


def test_the_lane_parses_no_body_before_the_key_is_checked(
    make_lane: Any, fixture_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the view does: a caller without a key costs no multipart split or base64 decode."""
    from service.inference import express as lane_module

    keys = [{"name": "predictor", "sha256": hash_key("key-p"), "scopes": ["predict"]}]
    express, _ = make_lane(auth_disabled="false", api_keys=json.dumps(keys))
    parsed: list[str] = []
    real = lane_module._uploads
    monkeypatch.setattr(
        lane_module, "_uploads", lambda ct, body: parsed.append(ct) or real(ct, body)
    )
    body = multipart(("n.png", scan(fixture_images, "normal_0.png")))
    assert call(express, body, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert parsed == []
    assert call(express, body, headers={"Authorization": "Bearer key-p"})[0] == 200
    assert len(parsed) == 1


def test_a_body_over_the_upload_limit_is_413_and_not_read_by_the_lane(
    make_lane: Any, fixture_images: Path
) -> None:
    express, flask = make_lane(max_upload_mb="0.01")  # 10 kB: the 44 kB scan is over it
    status, headers, _ = call(express, scan(fixture_images, "big_pneumonia_0.png"), "image/png")
    assert (status, flask.calls) == (413, 1)
    assert headers["Content-Type"] == "application/problem+json"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_request_is_counted_and_logged_once(
    lane: tuple[ExpressLane, Counting], fixture_images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    express, flask = lane
    good = multipart(("n.png", scan(fixture_images, "normal_0.png")))
    bad = multipart(("n.txt", b"not an image"))
    requests = ("scantune_inference_requests_total", {"model": MODEL, "version": "1"})
    http = (
        "scantune_http_requests_total",
        {"service": "inference", "method": "POST", "route": ROUTE},
    )
    before = {
        status: (_sample(requests[0], **requests[1], status=status),
                 _sample(http[0], **http[1], status=status))
        for status in ("200", "422")
    }  # fmt: skip
    with caplog.at_level(logging.INFO, logger="scantune"):
        assert [call(express, b)[0] for b in (good, good, bad)] == [200, 200, 422]
    after = {
        status: (_sample(requests[0], **requests[1], status=status),
                 _sample(http[0], **http[1], status=status))
        for status in ("200", "422")
    }  # fmt: skip
    assert after["200"][0] - before["200"][0] == 2 and after["200"][1] - before["200"][1] == 2
    assert after["422"][0] - before["422"][0] == 1 and after["422"][1] - before["422"][1] == 1
    predict_lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("predict ")
    ]
    access_lines = [r.getMessage() for r in caplog.records if f"route={ROUTE}" in r.getMessage()]
    assert [line.split("status=")[1][:3] for line in predict_lines] == ["200", "200", "422"]
    assert len(access_lines) == 3
    assert all("request_id=req-express-test" in line for line in predict_lines + access_lines)
    assert flask.calls == 1


def test_an_unexpected_error_on_the_lane_is_logged_and_flask_answers(
    lane: tuple[ExpressLane, Counting], fixture_images: Path, caplog: pytest.LogCaptureFixture
) -> None:
    express, flask = lane

    class Broken:
        def dumps(self, obj: Any, **kwargs: Any) -> str:
            raise TypeError("a bug on the lane")

    express.json = Broken()  # the lane's encoder only: Flask keeps its own
    with caplog.at_level(logging.WARNING, logger="scantune"):
        status, _, body = call(express, multipart(("n.png", scan(fixture_images, "normal_0.png"))))
    assert (status, flask.calls) == (200, 1)
    assert json.loads(body)["predictions"][0]["file"] == "n.png"
    assert "express lane gave a request to Flask after TypeError" in caplog.text


def test_a_client_gone_mid_body_gets_a_problem_not_a_server_error(
    lane: tuple[ExpressLane, Counting], fixture_images: Path
) -> None:
    """The body read fails (a socket timeout, a reset): Flask answers from an empty body."""
    express, flask = lane

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
    out = b"".join(express(environ, lambda status, headers, exc=None: started.append(status)))
    assert (started[0][:3], flask.calls) == ("400", 1), out
    assert json.loads(out)["status"] == 400


class CountingDecodes:
    """`models.imaging.decode` as the predictor calls it, counting the scans it decodes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from service.inference import predictor

        self.real, self.names = predictor.imaging.decode, []
        monkeypatch.setattr(predictor.imaging, "decode", self)

    def __call__(self, data: bytes, name: str) -> Any:
        self.names.append(name)
        return self.real(data, name)


REFUSED = [  # (case, settings, files, status): scans the predictor refuses after decoding some
    ("last file not a scan", {}, ["a.png", "b.jpg", "c.txt"], 422),
    ("megapixels over the budget", {"max_request_megapixels": "0.001"}, ["a.png", "b.jpg"], 413),
]


@pytest.mark.parametrize(("case", "env", "names", "status"), REFUSED, ids=[c[0] for c in REFUSED])
def test_scans_the_lane_refuses_are_not_decoded_again_by_flask(
    make_lane: Any,
    fixture_images: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    env: dict[str, str],
    names: list[str],
    status: int,
) -> None:
    """Flask answers the lane's refusal with its problem shape, from the lane's decoding: a
    413 comes after up to `max_request_megapixels` of it, seconds of a worker."""
    express, flask = make_lane(**env)
    data = {
        ".png": scan(fixture_images, "normal_0.png"),
        ".jpg": scan(fixture_images, "normal_1.jpg"),
        ".txt": b"hello, not an image",
    }
    body = multipart(*((name, data[name[-4:]]) for name in names))
    decodes = CountingDecodes(monkeypatch)
    got, headers, answer = call(express, body)
    assert (got, flask.calls) == (status, 1), answer
    # with a budget of 1,000 pixels, the second 28x28 scan (784 pixels each) is over it
    assert decodes.names == (names if status == 422 else names[:2])
    assert headers["Content-Type"] == "application/problem+json"

    decodes.names.clear()  # the same request to Flask alone: the same problem, decoding itself
    alone = call(flask, body)
    assert decodes.names == (names if status == 422 else names[:2])
    assert (alone[0], alone[1]) == (got, headers)
    assert json.loads(alone[2]) == json.loads(answer)


def test_a_refusal_left_for_another_version_is_not_raised(
    lane: tuple[ExpressLane, Counting], fixture_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal the lane met with a version swapped out since: Flask decodes with its own."""
    from service.errors import Unprocessable
    from service.inference.views import LANE_REFUSAL

    _, flask = lane
    environ = EnvironBuilder(
        path=PREDICT,
        method="POST",
        data=multipart(("n.png", scan(fixture_images, "normal_0.png"))),
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
    ).get_environ()
    environ[LANE_REFUSAL] = ((MODEL, 99), Unprocessable("n.png: refused with version 99"))
    decodes = CountingDecodes(monkeypatch)
    started: list[Any] = []
    answer = b"".join(flask(environ, lambda status, hdrs, exc=None: started.append(status)))
    assert started[0].startswith("200"), answer
    assert decodes.names == ["n.png"]
