"""Results to an EHR's FHIR server: the node under gunicorn renders each series' SR as a FHIR
R4 transaction and POSTs it over HTTPS (checked against the hospital CA), and counts it
delivered only when the server answers every entry with a 2xx.

No FHIR server runs here (HAPI needs Java and its jars from Maven Central): a stand-in plays
one. It parses every Bundle with fhir.resources, applies each entry as the conditional create
it asks for (a resource whose identifier it already holds is not created again), and answers
with a transaction-response; the test scripts failures before or after it commits."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from PIL import Image

from service.dicom_node.delivery import NotDelivered, Rejected, sender_for
from service.dicom_node.peers import DicomDestination
from tests.conftest import HospitalCA
from tests.dicom_node.parts import Gunicorn, make_study, send, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
TOKEN = "ehr-token-1"
SLACK_S = 30.0


class FhirServer:
    """A FHIR base URL (`/fhir/r4`) over HTTPS that takes transactions from a bearer of TOKEN.
    `script` are what it does with the next transactions: "ok", "refuse" (503 before doing
    anything), "lose" (commits, then answers 504 as a gateway whose upstream timed out) or
    "reject-entry" (answers 200 with an entry refused); the last one goes on."""

    def __init__(self, ca: HospitalCA, script: list[str]) -> None:
        self.script, self.lock = list(script), threading.Lock()
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}  # (type, identifier) -> resource
        self.answers: list[tuple[str, list[str]]] = []  # (what it did, entry statuses)
        self.bundles: list[Bundle] = []  # each transaction taken, as parsed
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, out = server.transaction(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.socket = ca.server_context("localhost").wrap_socket(
            self.http.socket, server_side=True
        )
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"https://localhost:{self.http.server_address[1]}/fhir/r4"

    def transaction(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if path == "/fhir/moved":
            return 307, _outcome("informational")  # a redirect the node must not follow
        if path != "/fhir/r4":
            return 404, _outcome("not-found")
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, _outcome("login")
        assert headers["Content-Type"] == headers["Accept"] == "application/fhir+json"
        bundle = Bundle.model_validate_json(body)  # the R4B schema, strictly
        assert bundle.type == "transaction"
        with self.lock:
            self.bundles.append(bundle)
            step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            if step == "refuse":
                self.answers.append((step, []))
                return 503, _outcome("transient")
            if step == "reject":  # the Bundle itself refused (a profile it does not meet)
                self.answers.append((step, []))
                return 422, _outcome("processing")
            statuses = [self._create(entry) for entry in bundle.entry]
            if step == "reject-entry":
                statuses[-1] = "422 Unprocessable Entity"
            if step == "conflict-entry":
                statuses[-1] = "409 Conflict"
            self.answers.append((step, statuses))
        if step == "lose":
            return 504, _outcome("timeout")
        entries = [{"response": {"status": status}} for status in statuses]
        return 200, json.dumps({"resourceType": "Bundle", "type": "transaction-response",
                                "entry": entries}).encode()  # fmt: skip

    def _create(self, entry: Any) -> str:
        """A conditional create, as `ifNoneExist` asks: 200 when a resource holds that
        identifier already, else 201 (stored); or a conditional update (`PUT
        Kind?identifier=…`): the resource replaced, 200, or created when none matched, 201."""
        resource = entry.resource
        kind = resource.get_resource_type()
        (identifier,) = resource.identifier
        key = f"{identifier.system}|{identifier.value}"
        held = (kind, key) in self.stored
        if entry.request.method == "PUT":
            assert entry.request.url == f"{kind}?identifier={key}" and not entry.request.ifNoneExist
            self.stored[(kind, key)] = json.loads(resource.model_dump_json())
            return "200 OK" if held else "201 Created"
        assert (entry.request.method, entry.request.url) == ("POST", kind)
        assert entry.request.ifNoneExist == f"identifier={key}"
        if held:
            return "200 OK"
        self.stored[(kind, key)] = json.loads(resource.model_dump_json())
        return "201 Created"

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for (k, _), r in self.stored.items() if k == kind]

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def _outcome(code: str) -> bytes:
    issue = {"severity": "error", "code": code}
    return json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()


@pytest.fixture
def servers(hospital_ca: HospitalCA) -> Iterator[Callable[[list[str]], FhirServer]]:
    made: list[FhirServer] = []

    def make(script: list[str]) -> FhirServer:
        made.append(FhirServer(hospital_ca, script))
        return made[-1]

    yield make
    for server in made:
        server.stop()


def test_a_series_reaches_the_ehr_once_though_its_first_answers_are_lost(
    make_node: Callable[..., Gunicorn],
    servers: Callable[[list[str]], FhirServer],
    hospital_ca: HospitalCA,
    tmp_path: Path,
) -> None:
    ehr = servers(["refuse", "lose", "ok"])  # down, then up but the answer lost, then fine
    authorization = tmp_path / "ehr-authorization"
    authorization.write_text(f"Bearer {TOKEN}\n")
    destination = {"url": ehr.url, "authorization_file": str(authorization)}
    node = make_node(
        dicom_destinations=[{"fhir": destination}],
        dicom_https_ca_file=str(hospital_ca.pem_file),
    ).start()
    study = make_study(3)
    assert send(node.port_dicom, study) == [0, 0, 0]
    wait_until(
        lambda: node.metric("scantune_dicom_results_delivered_total", kind="fhir") == 1,
        SLACK_S, "the EHR takes the result",
    )  # fmt: skip
    assert [step for step, _ in ehr.answers] == ["refuse", "lose", "ok"]
    assert set(ehr.answers[1][1]) == {"201 Created"}
    assert set(ehr.answers[2][1]) == {"200 OK"}  # sent again: nothing created twice
    (report,) = ehr.of("DiagnosticReport")
    assert report["status"] == "preliminary" and report["subject"]["identifier"]["value"] == "P-1"
    assert (
        report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{study[0].StudyInstanceUID}"
    )
    observations = ehr.of("Observation")
    assert len(observations) == len(report["result"]) == 3
    assert {o["derivedFrom"][0]["display"] for o in observations} == {
        f"SOP Instance UID {ds.SOPInstanceUID}" for ds in study
    }
    assert len(ehr.of("Device")) == 1
    assert node.metric("scantune_dicom_delivery_failures_total", kind="fhir") == 2
    log = node.log_text()
    assert TOKEN not in log
    for value in ("P-1", study[0].StudyInstanceUID, *(ds.SOPInstanceUID for ds in study)):
        assert value not in log, value  # no patient data, no UID


def test_attention_maps_reach_the_ehr_as_media_the_report_lists(
    make_node: Callable[..., Gunicorn],
    servers: Callable[[list[str]], FhirServer],
    hospital_ca: HospitalCA,
    tmp_path: Path,
) -> None:
    ehr = servers(["lose", "ok"])  # the first answer lost: the maps are not created twice
    authorization = tmp_path / "ehr-authorization"
    authorization.write_text(f"Bearer {TOKEN}\n")
    destination = {"url": ehr.url, "authorization_file": str(authorization), "attention_maps": True}
    node = make_node(
        dicom_destinations=[{"fhir": destination}],
        dicom_https_ca_file=str(hospital_ca.pem_file),
    ).start()
    study = make_study(2)
    assert send(node.port_dicom, study) == [0, 0]
    wait_until(
        lambda: node.metric("scantune_dicom_results_delivered_total", kind="fhir") == 1,
        SLACK_S, "the EHR takes the result and its maps",
    )  # fmt: skip
    assert ehr.answers[1] == ("ok", ["200 OK"] * (1 + 1 + 2 + 2))  # report, device, 2 + 2
    bundle = ehr.bundles[-1]
    report = bundle.entry[0].resource
    media = {
        e.fullUrl: e.resource for e in bundle.entry if e.resource.get_resource_type() == "Media"
    }
    assert [link.link.reference for link in report.media] == list(media)
    sizes = {(int(ds.Columns), int(ds.Rows)) for ds in study}
    for link, image in zip(report.media, media.values(), strict=True):
        assert image.status == "completed" and image.type.coding[0].code == "image"
        assert image.subject.identifier.value == "P-1"
        assert image.device.reference == bundle.entry[1].fullUrl  # the model's Device
        assert image.identifier[0].system == "urn:dicom:uid"
        assert image.content.contentType == "image/png"
        png = Image.open(io.BytesIO(image.content.data))  # fhir.resources decodes base64
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.size == (image.width, image.height) and png.size in sizes
        assert link.comment == image.content.title and "chest-xray 1:" in image.content.title
    assert len(ehr.of("Media")) == 2
    assert node.metric("scantune_dicom_attention_maps_total", outcome="made") == 2
    log = node.log_text()
    for value in ("P-1", study[0].StudyInstanceUID, *(ds.SOPInstanceUID for ds in study)):
        assert value not in log, value


def test_a_send_is_delivered_only_when_every_entry_is_taken(
    servers: Callable[[list[str]], FhirServer], hospital_ca: HospitalCA, tmp_path: Path
) -> None:
    from service.config import DicomNodeSettings
    from tests.hospital.test_hl7v2 import _sources, _sr

    sr = _sr(_sources())
    path = tmp_path / "result.sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    ehr = servers(["reject-entry", "reject", "conflict-entry", "ok"])
    authorization = tmp_path / "authorization"
    authorization.write_text(f"Bearer {TOKEN}")
    fhir = {"url": ehr.url, "authorization_file": str(authorization)}
    destination = DicomDestination.model_validate({"fhir": fhir})
    https = DicomNodeSettings(dicom_https_ca_file=hospital_ca.pem_file).dicom_https_tls()
    sender = sender_for(destination, "NODE", 10, https=https)
    # refused for what it is (422): final; a 409 may pass later: retried
    with pytest.raises(Rejected, match="entries answered 422"):
        sender.send(path.read_bytes())
    with pytest.raises(Rejected, match=r"FHIR transaction refused \(422\)"):
        sender.send(path.read_bytes())
    with pytest.raises(NotDelivered, match="entries answered 409") as conflict:
        sender.send(path.read_bytes())
    assert not isinstance(conflict.value, Rejected)
    sender.send(path.read_bytes())  # sent again by a person, once the server takes it
    assert len(ehr.of("Observation")) == 2

    authorization.write_text(f"Bearer {uuid.uuid4()}")  # a token the server does not know
    with pytest.raises(NotDelivered, match=r"FHIR transaction failed \(401\)") as denied:
        sender.send(path.read_bytes())
    assert not isinstance(denied.value, Rejected)  # credentials are mended, then it passes
    untrusting = sender_for(destination, "NODE", 10)  # the public CAs only
    with pytest.raises(NotDelivered, match="SSLError"):
        untrusting.send(path.read_bytes())
    wrong_base = DicomDestination.model_validate({"fhir": {**fhir, "url": ehr.url + "/Bundle"}})
    with pytest.raises(NotDelivered, match=r"\(404\)"):
        sender_for(wrong_base, "NODE", 10, https=https).send(path.read_bytes())
    moved = DicomDestination.model_validate(
        {"fhir": {**fhir, "url": ehr.url[: -len("/r4")] + "/moved"}}
    )
    with pytest.raises(NotDelivered, match=r"\(307\)"):
        sender_for(moved, "NODE", 10, https=https).send(path.read_bytes())


def test_a_recalled_result_is_marked_entered_in_error_where_it_was_created(
    servers: Callable[[list[str]], FhirServer], hospital_ca: HospitalCA, tmp_path: Path
) -> None:
    """The withdrawal updates the very resources the result created (by their identifiers),
    and the EHR keeps them, marked; the model's Device is left as it is."""
    from service.config import DicomNodeSettings
    from tests.hospital.test_hl7v2 import _sources, _sr

    path = tmp_path / "result.sr.dcm"
    _sr(_sources()).save_as(path, enforce_file_format=True)
    ehr = servers(["ok"])
    authorization = tmp_path / "authorization"
    authorization.write_text(f"Bearer {TOKEN}")
    destination = DicomDestination.model_validate(
        {"fhir": {"url": ehr.url, "authorization_file": str(authorization)}}
    )
    https = DicomNodeSettings(dicom_https_ca_file=hospital_ca.pem_file).dicom_https_tls()
    sender = sender_for(destination, "NODE", 10, https=https)
    sender.send(path.read_bytes())
    created = set(ehr.stored)
    sender.withdraw(path.read_bytes(), [], "misses pneumothorax")
    assert set(ehr.stored) == created  # nothing new: each one updated where it was
    assert ehr.answers[-1][1][:1] == ["200 OK"]
    [report] = ehr.of("DiagnosticReport")
    assert report["status"] == "entered-in-error"
    assert report["conclusion"].startswith("Withdrawn: misses pneumothorax")
    observations = ehr.of("Observation")
    assert len(observations) == 2
    assert {o["status"] for o in observations} == {"entered-in-error"}
    [device] = ehr.of("Device")
    assert "status" not in device or device["status"] != "entered-in-error"


def test_a_withdrawal_the_ehr_refused_is_sent_again_once_it_is_mended(
    make_node: Callable[..., Gunicorn],
    servers: Callable[[list[str]], FhirServer],
    hospital_ca: HospitalCA,
    tmp_path: Path,
) -> None:
    """The EHR takes the result, refuses its withdrawal (a profile it does not meet): the
    recall lists it rejected, its result kept; sent again by a person, it is withdrawn."""
    from service.auth import hash_key
    from tests.dicom_node.conftest import OPS_KEY

    admin = "admin-key-of-the-node"
    ehr = servers(["ok", "reject", "ok"])
    authorization = tmp_path / "ehr-authorization"
    authorization.write_text(f"Bearer {TOKEN}\n")
    node = make_node(
        dicom_destinations=[{"fhir": {"url": ehr.url, "authorization_file": str(authorization)}}],
        dicom_https_ca_file=str(hospital_ca.pem_file),
        dicom_recall_keep_h=24,
        api_keys=[{"name": "ops", "sha256": hash_key(OPS_KEY), "scopes": ["series:read"]},
                  {"name": "admin", "sha256": hash_key(admin), "scopes": ["admin"]}],
    ).start()  # fmt: skip

    def call(method: str, path: str, key: str = admin, **kw: Any) -> Any:
        return requests.request(method, f"{node.url}{path}", timeout=10,
                                headers={"Authorization": f"Bearer {key}"}, **kw)  # fmt: skip

    assert send(node.port_dicom, make_study(2)) == [0, 0]
    wait_until(lambda: ehr.of("DiagnosticReport"), SLACK_S, "the EHR takes the result")
    [series] = call("GET", "/v1/series", OPS_KEY).json()["items"]
    asked = {"model": series["model"], "version": series["version"], "reason": "unsafe"}
    recall_id = call("POST", "/v1/recalls", json=asked).json()["id"]
    path = f"/v1/recalls/{recall_id}"
    refused = wait_until(
        lambda: [w for w in call("GET", path, OPS_KEY).json()["open"] if w["state"] == "rejected"],
        SLACK_S, "the withdrawal refused",
    )  # fmt: skip
    assert refused[0]["last_error"] == "FHIR transaction refused (422)"
    assert ehr.of("DiagnosticReport")[0]["status"] == "preliminary"  # still standing there
    assert call("POST", f"{path}/retry", OPS_KEY).status_code == 403
    assert call("POST", "/v1/recalls/99/retry").status_code == 404
    again = call("POST", f"{path}/retry")
    assert again.status_code == 200, again.text
    wait_until(
        lambda: call("GET", path, OPS_KEY).json()["withdrawals"]["done"] == 1,
        SLACK_S, "the withdrawal sent again",
    )  # fmt: skip
    assert ehr.of("DiagnosticReport")[0]["status"] == "entered-in-error"
    nothing = call("POST", f"{path}/retry")
    assert nothing.status_code == 409 and "no refused withdrawal" in nothing.json()["detail"]
    spool = tmp_path / "spool"
    assert not [p for p in spool.iterdir() if p.name.endswith(".sr.dcm")]  # withdrawn: deleted
    assert node.metric("scantune_dicom_withdrawals_total", kind="fhir", outcome="rejected") == 1
