"""Under gunicorn, both services answer what gunicorn parses before the app (an over-long
query string or request line, a malformed request line) with a problem document, like
every other error, never gunicorn's HTML page."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from service.web import MAX_QUERY_BYTES
from tests.service.running import Up

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    instance = Up(tmp_path_factory.mktemp("up"))
    instance.start()
    yield instance
    instance.kill()


def raw(url: str, request_line: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request line as bytes (no client library would send a broken one)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def assert_problem(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, body[:300]
    assert headers["content-type"] == "application/problem+json", headers
    problem = json.loads(body)
    assert problem["status"] == expected and problem["title"] and problem["detail"]
    assert problem["type"].startswith("https://scantune.dev/problems/")
    return problem


@pytest.mark.parametrize("service", ["training", "inference"])
@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/chest:predict"])
def test_a_query_string_over_the_limit_is_a_414_problem(up: Up, service: str, path: str) -> None:
    url = up.url if service == "training" else up.inference_url
    method = "POST" if path.endswith(":predict") else "GET"
    just_fits = requests.request(method, f"{url}{path}?q={'a' * (MAX_QUERY_BYTES - 2)}")
    assert just_fits.status_code != 414

    # Read by the app (under gunicorn's 8190-byte request line) and by gunicorn (over it).
    for size in (MAX_QUERY_BYTES + 1, 20_000):
        response = requests.request(method, f"{url}{path}?q={'a' * size}")
        problem = assert_problem(
            response.status_code, dict(response.headers.lower_items()), response.content, 414
        )
        assert problem["title"] == "URI too long"


@pytest.mark.parametrize("service", ["training", "inference"])
def test_an_unparseable_request_line_is_a_400_problem(up: Up, service: str) -> None:
    url = up.url if service == "training" else up.inference_url
    status, headers, body = raw(url, b"GET /healthz HTTP/1.1 extra")
    assert_problem(status, headers, body, 400)
    # The workers go on serving.
    assert requests.get(f"{url}/healthz").status_code == 200


def test_the_log_names_no_request_content(up: Up) -> None:
    secret = "patient-name-in-a-query"
    requests.get(f"{up.url}/v1/models?{secret}={'a' * 20_000}")
    assert secret not in Path(up.output).read_text()
