"""STOW-RS to a DICOMweb server behind OAuth 2.0 client credentials, as cloud DICOM stores
and hospital API gateways are: the node under gunicorn gets a token from the identity
provider, renews it when it runs out, and Orthanc behind the gateway keeps the SR.

An identity provider and an API gateway cannot run here: one stand-in plays both (the token
endpoint over HTTPS with the hospital CA's certificate, the gateway forwarding to a real
Orthanc) and checks the exact requests the node makes."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from tests.conftest import HospitalCA
from tests.dicom_node.parts import Gunicorn, Orthanc, make_study, send, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
CLIENT_ID, SECRET, SCOPE = "scantune-node", "client-s3cret", "dicom.write"
LIFETIME_S = 3  # short, so the test sees the node renew its token
SLACK_S = 20.0


class Gateway:
    """The token endpoint and a gateway to Orthanc's DICOMweb that takes only live tokens it
    issued, both HTTPS with certificates of the hospital's CA, each on a thread."""

    def __init__(self, orthanc: Orthanc, ca: HospitalCA) -> None:
        self.orthanc = orthanc
        self.token_requests: list[dict[str, Any]] = []
        self.live: dict[str, float] = {}  # token -> when it stops working (monotonic)
        self.refused: list[str] = []  # why the gateway refused a STOW request
        self.lifetime_s = LIFETIME_S  # of the tokens it issues next
        self.lock = threading.Lock()
        self.idp = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._token))
        self.idp.socket = ca.server_context("localhost").wrap_socket(
            self.idp.socket, server_side=True
        )
        self.gate = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._forward))
        self.gate.socket = ca.server_context("localhost").wrap_socket(
            self.gate.socket, server_side=True
        )
        for server in (self.idp, self.gate):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.token_url = f"https://localhost:{self.idp.server_address[1]}/oauth2/token"
        self.stow_url = f"https://localhost:{self.gate.server_address[1]}/dicom-web"

    def stop(self) -> None:
        for server in (self.idp, self.gate):
            server.shutdown()
            server.server_close()

    def _handler(self, answer: Callable[[Any, bytes], tuple[int, str, bytes]]) -> type:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, kind, out = answer(self, body)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _token(self, request: Any, body: bytes) -> tuple[int, str, bytes]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        basic = request.headers.get("Authorization", "").removeprefix("Basic ")
        who = base64.b64decode(basic).decode() if basic else ""
        granted = who == f"{CLIENT_ID}:{SECRET}"
        with self.lock:
            self.token_requests.append(
                {"path": request.path, "form": form, "client": who.partition(":")[0], "ok": granted}
            )
            if not granted:
                return 401, "application/json", b'{"error": "invalid_client"}'
            token, lifetime = f"tok-{len(self.live) + 1}", self.lifetime_s
            self.live[token] = time.monotonic() + lifetime
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}
        return 200, "application/json", json.dumps(answer).encode()

    def _forward(self, request: Any, body: bytes) -> tuple[int, str, bytes]:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self.lock:
            if time.monotonic() >= self.live.get(token, 0.0):
                self.refused.append("expired" if token in self.live else "unknown token")
                return 401, "application/json", b'{"error": "invalid_token"}'
        answer = requests.post(
            f"{self.orthanc.url}{request.path}",
            data=body,
            headers={"Content-Type": request.headers["Content-Type"]},
            auth=("scantune", "s3cret"),
            timeout=30,
        )
        return answer.status_code, answer.headers["Content-Type"], answer.content


@pytest.fixture
def gateway(tmp_path: Path, node_dicom_port: int, hospital_ca: HospitalCA) -> Iterator[Gateway]:
    pacs = Orthanc(tmp_path / "cloud-pacs", node_dicom_port, users={"scantune": "s3cret"}).start()
    gate = Gateway(pacs, hospital_ca)
    yield gate
    gate.stop()
    pacs.stop()


def test_results_go_by_stow_rs_with_oauth_tokens_renewed_as_they_run_out(
    make_node: Callable[..., Gunicorn], gateway: Gateway, hospital_ca: HospitalCA, tmp_path: Path
) -> None:
    secret = tmp_path / "oauth-client-secret"
    secret.write_text("an-old-secret\n")
    oauth = {
        "token_url": gateway.token_url,
        "client_id": CLIENT_ID,
        "client_secret_file": str(secret),
        "scope": SCOPE,
    }
    node = make_node(
        dicom_destinations=[{"stow_url": gateway.stow_url, "oauth": oauth}],
        dicom_https_ca_file=str(hospital_ca.pem_file),  # added to the public CAs
    ).start()

    first = make_study(2)
    assert send(node.port_dicom, first) == [0, 0]
    wait_until(
        lambda: node.metric("scantune_dicom_delivery_failures_total", kind="stow") >= 1,
        SLACK_S,
        "the old secret is refused",
    )
    assert gateway.live == {}, "a refused client got a token"
    secret.write_text(SECRET + "\n")  # rotated: read at the next token request
    reports = gateway.orthanc.reports
    wait_until(lambda: reports(first[0].StudyInstanceUID), SLACK_S, "the first SR arrives")
    assert list(gateway.live) == ["tok-1"]

    time.sleep(LIFETIME_S)  # tok-1 has run out: the next delivery must ask for another
    second = make_study(1)
    assert send(node.port_dicom, second) == [0]
    wait_until(lambda: reports(second[0].StudyInstanceUID), SLACK_S, "the second SR arrives")
    assert list(gateway.live) == ["tok-1", "tok-2"]
    assert gateway.refused == [], "the node sent a token that had run out"

    gateway.lifetime_s = 600  # tok-3 lives long, but is revoked: a 401 makes the node ask anew
    send(node.port_dicom, third := make_study(1))
    wait_until(lambda: reports(third[0].StudyInstanceUID), SLACK_S, "the third SR arrives")
    with gateway.lock:
        gateway.live["tok-3"] = 0.0
    send(node.port_dicom, fourth := make_study(1))
    wait_until(lambda: reports(fourth[0].StudyInstanceUID), SLACK_S, "the fourth SR arrives")
    assert list(gateway.live) == ["tok-1", "tok-2", "tok-3", "tok-4"]
    assert gateway.refused == ["expired"]
    asked = gateway.token_requests
    assert {(r["path"], r["client"]) for r in asked} == {("/oauth2/token", CLIENT_ID)}
    granted = [r for r in asked if r["ok"]]
    assert [r["form"] for r in granted] == [
        {"grant_type": "client_credentials", "scope": SCOPE}
    ] * 4
    assert len(reports(first[0].StudyInstanceUID)) == 1
    log = node.log_text()
    assert SECRET not in log and "tok-1" not in log and "an-old-secret" not in log
    assert "invalid_client" in log  # the refusal is told, by the endpoint's error code


def test_the_hospital_ca_is_trusted_beside_the_public_ones(
    gateway: Gateway, hospital_ca: HospitalCA, tmp_path: Path
) -> None:
    import certifi
    from pydantic import ValidationError

    from service.config import DicomNodeSettings
    from service.dicom_node.http_auth import https_session

    context = DicomNodeSettings(dicom_https_ca_file=hospital_ca.pem_file).dicom_https_tls()
    assert context is not None
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    assert {"commonName": "scantune test hospital CA"} in subjects
    assert len(subjects) > certifi.contents().count("BEGIN CERTIFICATE") // 2  # still public
    url = gateway.token_url
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(url, timeout=10)  # requests' own CAs do not know the hospital's
    with https_session(requests.Session(), context) as session:
        assert session.post(url, timeout=10).status_code == 401  # TLS checked out: no client
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for bad in (junk, tmp_path / "missing.pem"):
        with pytest.raises(ValidationError, match="dicom_https_ca_file does not load"):
            DicomNodeSettings(dicom_https_ca_file=bad)


@pytest.mark.parametrize(
    ("oauth", "says"),
    [
        ({"token_url": "http://idp/token"}, "token_url"),
        ({"token_url": "https://idp/token", "client_id": ""}, "client_id"),
    ],
)
def test_an_oauth_destination_is_checked_at_start(oauth: dict[str, str], says: str) -> None:
    from pydantic import ValidationError

    from service.dicom_node.peers import DicomDestination

    values = {"client_id": "node", "client_secret_file": "/run/secret", **oauth}
    with pytest.raises(ValidationError, match=says):
        DicomDestination(stow_url="https://pacs/dicom-web", oauth=values)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="oauth goes with stow_url"):
        DicomDestination(
            ae_title="PACS",
            host="pacs",
            port=104,
            oauth={"token_url": "https://idp/t", "client_id": "n", "client_secret_file": "/s"},  # type: ignore[arg-type]
        )
