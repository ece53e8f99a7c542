"""Results to an HL7 v2 receiver: the node under gunicorn renders each series' SR as an
ORU^R01 and sends it over MLLP (plain, or TLS checked against the hospital CA), and counts it
delivered only once the receiver acknowledges it with AA.

An integration engine (Mirth, Rhapsody) cannot run here: hl7apy's MLLP server stands in for
one. It parses every message against the 2.5.1 ORU^R01 structure with strict validation and
answers with the acknowledgement codes the test scripts."""

from __future__ import annotations

import base64
import io
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import hl7
import pytest
import requests
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message
from PIL import Image

from tests.conftest import HospitalCA
from tests.dicom_node.conftest import OPS_KEY, STOW_KEY
from tests.dicom_node.parts import (
    MODALITY_AE,
    PACS_AE,
    Gunicorn,
    Orthanc,
    make_study,
    send,
    wait_until,
)
from tests.dicom_node.test_app import encoded, multipart
from tests.inference.conftest import MODEL

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
SLACK_S = 30.0
ED_DATA = re.compile(r"(\|ED\|[^|\r]*\|[^|\r]*\|\^IM\^JPEG\^Base64\^)([A-Za-z0-9+/=]+)")


@dataclass
class Received:
    control_id: str
    er7: str
    answered: str


class Receiver:
    """An MLLP listener on a loopback port; `answers` are the ACK codes it gives in turn (the
    last one from then on)."""

    def __init__(self, answers: list[str], tls: ssl.SSLContext | None = None) -> None:
        self.answers, self.received = list(answers), []
        self.lock = threading.Lock()
        receiver = self

        class Handler(AbstractHandler):
            def reply(self) -> str:
                return receiver.acknowledge(self.incoming_message)

        class Server(MLLPServer):
            def get_request(self) -> tuple[Any, Any]:
                conn, address = super().get_request()
                return (tls.wrap_socket(conn, server_side=True) if tls else conn), address

        self.server = Server("127.0.0.1", 0, {"ORU^R01^ORU_R01": (Handler,)}, timeout=10)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def acknowledge(self, er7: str) -> str:
        # hl7apy types OBX-5 ("varies") as ST, 199 characters at most, under strict rules
        # whatever OBX-2 says: an ED's data (TX) is checked as base64 here, the rest strictly.
        checked = ED_DATA.sub(lambda m: m[1] + str(len(base64.b64decode(m[2], validate=True))), er7)
        incoming = parse_message(
            checked, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
        )
        assert incoming.validate()  # a structural error closes the connection: no ACK
        control = str(incoming.msh.msh_10.value)
        with self.lock:
            code = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            self.received.append(Received(control, er7, code))
        ack = Message("ACK", version="2.5.1")
        ack.msh.msh_3, ack.msh.msh_9, ack.msh.msh_10 = "RIS", "ACK^R01^ACK", "ACK" + control[:17]
        ack.msh.msh_11 = "P"
        ack.msa.msa_1, ack.msa.msa_2 = code, control
        return str(ack.to_mllp())

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.answered == "AA"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(answers: list[str], tls: ssl.SSLContext | None = None) -> Receiver:
        made.append(Receiver(answers, tls))
        return made[-1]

    yield make
    for receiver in made:
        receiver.stop()


def test_a_series_reaches_the_receiver_as_oru_r01_retried_until_acknowledged(
    make_node: Callable[..., Gunicorn], receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(["AE", "AA"])  # the engine refuses once (e.g. its database away)
    destination = {"host": "127.0.0.1", "port": receiver.port, "receiving_application": "RIS"}
    node = make_node(dicom_destinations=[{"hl7": destination}]).start()
    study = make_study(3)
    assert send(node.port_dicom, study) == [0, 0, 0]
    accepted = wait_until(receiver.accepted, SLACK_S, "the receiver accepts a result")
    assert [r.answered for r in receiver.received] == ["AE", "AA"]
    assert len({r.control_id for r in receiver.received}) == 1  # the same message, resent
    msg = hl7.parse(accepted[0].er7)
    assert str(msg.segment("MSH")[5]) == "RIS"
    assert str(msg["PID.F3.R1.C1"]) == "P-1" and str(msg.segment("OBR")[3]) == "A1"
    obx = msg.segments("OBX")
    assert str(obx[0][5]) == study[0].StudyInstanceUID
    sources = {str(s[5]) for s in obx if str(s[3][0][0]) == "121112"}
    assert sources == {ds.SOPInstanceUID for ds in study}
    assert len([s for s in obx if str(s[2]) == "NM"]) == 3
    wait_until(
        lambda: node.metric("scantune_dicom_results_delivered_total", kind="hl7") == 1,
        10, "the delivery counted",
    )  # fmt: skip
    assert node.metric("scantune_dicom_delivery_failures_total", kind="hl7") >= 1
    assert node.metric("scantune_dicom_queue_depth") == 0
    asked = requests.get(  # the access log leaves the query (and its study UID) out
        f"{node.url}/v1/series",
        params={"study_instance_uid": study[0].StudyInstanceUID},
        headers={"Authorization": f"Bearer {OPS_KEY}"},
        timeout=10,
    )
    assert asked.status_code == 200 and len(asked.json()["items"]) == 1
    extra = make_study(1)  # STOW-RS to the study's own URL: its UID in the path, not the log
    body, kind = multipart(encoded(extra[0]))
    stored = requests.post(
        f"{node.url}/dicomweb/studies/{extra[0].StudyInstanceUID}",
        data=body,
        headers={"Content-Type": kind, "Authorization": f"Bearer {STOW_KEY}"},
        timeout=30,
    )
    assert stored.status_code == 200, stored.text
    posted = '"POST /dicomweb/studies/{uid} HTTP/1.1" 200'

    # gunicorn writes its access line once the response is sent: the client may read first
    def logged() -> str | None:
        text = (node.root / "dicom.log").read_text()
        return text if posted in text else None

    log = wait_until(logged, 10, "the access line of the STOW-RS")
    assert '"GET /v1/series HTTP/1.1" 200' in log
    assert extra[0].StudyInstanceUID not in log
    assert "classified by" in log  # the log is the node's
    for value in ("P-1", study[0].StudyInstanceUID, *(ds.SOPInstanceUID for ds in study)):
        assert value not in log, value  # no patient data, no UID


def test_attention_maps_reach_the_receiver_as_ed_observations_beside_their_findings(
    make_node: Callable[..., Gunicorn], receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(["AA"])
    destination = {"host": "127.0.0.1", "port": receiver.port, "attention_maps": True}
    node = make_node(dicom_destinations=[{"hl7": destination}]).start()
    study = make_study(2)
    assert send(node.port_dicom, study) == [0, 0]
    [accepted] = wait_until(receiver.accepted, SLACK_S, "the receiver accepts a result")
    obx = hl7.parse(accepted.er7).segments("OBX")  # parsed strictly by the receiver too
    scan_of = {str(s[4]): str(s[5]) for s in obx if str(s[3][0][0]) == "121112"}
    maps = [s for s in obx if str(s[2]) == "ED"]
    assert sorted(str(s[4]) for s in maps) == sorted(scan_of) and len(maps) == 2
    sizes = {ds.SOPInstanceUID: (int(ds.Columns), int(ds.Rows)) for ds in study}
    for s in maps:
        assert str(s[3][0][0]) == "attention-map" and str(s[3][0][2]) == "99SCANTUNE"
        assert [str(s[5][0][i]) for i in (1, 2, 3)] == ["IM", "JPEG", "Base64"]
        picture = Image.open(io.BytesIO(base64.b64decode(str(s[5][0][4]))))
        assert picture.format == "JPEG" and picture.size == sizes[scan_of[str(s[4])]]
        assert str(s[11]) == "P"  # preliminary, as the findings
    assert node.metric("scantune_dicom_attention_maps_total", outcome="made") == 2
    log = node.log_text()
    for value in ("P-1", study[0].StudyInstanceUID, *(ds.SOPInstanceUID for ds in study)):
        assert value not in log, value


def test_mllp_over_tls_to_a_receiver_the_hospital_ca_signed(
    make_node: Callable[..., Gunicorn],
    receivers: Callable[..., Receiver],
    hospital_ca: HospitalCA,
) -> None:
    receiver = receivers(["AA"], tls=hospital_ca.server_context("localhost"))
    node = make_node(
        dicom_destinations=[{"hl7": {"host": "localhost", "port": receiver.port, "tls": True}}],
        dicom_tls_ca_file=str(hospital_ca.pem_file),
    ).start()
    study = make_study(1)
    assert send(node.port_dicom, study) == [0]
    accepted = wait_until(receiver.accepted, SLACK_S, "the receiver accepts over TLS")
    assert str(hl7.parse(accepted[0].er7)["PID.F3.R1.C1"]) == "P-1"


def test_each_route_sends_its_results_only_to_the_destinations_it_names(
    make_node: Callable[..., Gunicorn], receivers: Callable[..., Receiver], orthanc: Orthanc
) -> None:
    """The modality's series go to the RIS only; the PACS's own (a route naming none) to the
    PACS and the RIS both, and not to the ward's receiver, which takes only a finding the
    model never answered (its delivery is recorded skipped)."""
    receiver, ward = receivers(["AA"]), receivers(["AA"])
    ris = {"host": "127.0.0.1", "port": receiver.port, "receiving_application": "RIS"}
    alerts = {"host": "127.0.0.1", "port": ward.port, "receiving_application": "WARD"}
    pacs = {"ae_title": PACS_AE, "host": "127.0.0.1", "port": orthanc.dicom_port}
    route = {"model": MODEL, "alias": "production", "modality": "CR"}
    node = make_node(
        dicom_destinations=[
            {"name": "pacs", **pacs}, {"name": "ris", "hl7": ris},
            {"name": "ward", "hl7": alerts, "only_findings": ["tension-pneumothorax"]},
        ],
        dicom_routes=[{**route, "calling_ae": MODALITY_AE, "destinations": ["ris"]}, route],
    ).start()  # fmt: skip
    from_modality, from_pacs = make_study(2), make_study(1)
    assert send(node.port_dicom, from_modality) == [0, 0]
    assert send(node.port_dicom, from_pacs, ae_title=PACS_AE) == [0]
    wait_until(lambda: len(receiver.accepted()) == 2, SLACK_S, "the RIS gets both results")
    studies = {str(hl7.parse(r.er7).segments("OBX")[0][5]) for r in receiver.accepted()}
    assert studies == {from_modality[0].StudyInstanceUID, from_pacs[0].StudyInstanceUID}
    reports = wait_until(
        lambda: orthanc.reports(from_pacs[0].StudyInstanceUID), SLACK_S, "the PACS gets its SR"
    )
    assert len(reports) == 1
    wait_until(lambda: node.metric("scantune_dicom_queue_depth") == 0, 10, "both series done")
    assert orthanc.reports(from_modality[0].StudyInstanceUID) == []
    listed = requests.get(
        f"{node.url}/v1/series", headers={"Authorization": f"Bearer {OPS_KEY}"}, timeout=10
    ).json()["items"]
    sent_to = {
        i["study_instance_uid"]: sorted((d["destination"], d["state"]) for d in i["deliveries"])
        for i in listed
    }
    ris_key, ward_key = (f"mllp://127.0.0.1:{r.port}/{a}" for r, a in ((receiver, "RIS"),
                                                                      (ward, "WARD")))  # fmt: skip
    assert sent_to == {
        from_modality[0].StudyInstanceUID: [(ris_key, "done")],
        from_pacs[0].StudyInstanceUID: sorted([
            (f"{PACS_AE}@127.0.0.1:{orthanc.dicom_port}", "done"), (ris_key, "done"),
            (ward_key, "skipped"),
        ]),
    }  # fmt: skip
    (skipped,) = [d for i in listed for d in i["deliveries"] if d["state"] == "skipped"]
    assert skipped["last_error"] == (
        "not sent: it takes only tension-pneumothorax, which the model never answers"
    )
    assert (
        ward.accepted() == []
        and node.metric("scantune_dicom_deliveries_skipped_total", kind="hl7") == 1
    )
