"""Orders from the RIS end to end: HL7 ORM^O01 (and OMI^O23) messages over MLLP to the node
under gunicorn, which acknowledges each once kept, fetches the exam from Orthanc by its
accession number (at once, or once the exam reaches the PACS), and sends the SR back; cancels,
duplicates, what is not an order, and a sender that is not allowed."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import requests

from service.cli import main
from service.dicom_node.mllp import MllpError, exchange
from service.hospital.hl7v2 import parse_ack
from tests.conftest import free_port
from tests.dicom_node.conftest import OPS_KEY
from tests.dicom_node.parts import (
    PACS_AE,
    Gunicorn,
    Orthanc,
    make_study,
    store_in_pacs,
    wait_until,
)
from tests.dicom_node.test_e2e import QUIET_S, SLACK_S, referenced
from tests.hospital.test_hl7_orders import omi, orm

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def of(node: Gunicorn, accession: str) -> list[dict[str, Any]]:
    return [o for o in node.items("/v1/orders", OPS_KEY) if o["accession_number"] == accession]


def hl7_node(
    make_node: Callable[..., Gunicorn], orthanc: Orthanc, *, orders: bool = True, **settings: Any
) -> Gunicorn:
    """The node started with an HL7 port loopback may send to, fetching ordered exams from
    Orthanc (`orders`; else it takes the RIS's reports only)."""
    if orders:
        pacs = {"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1",
                "port": orthanc.dicom_port}  # fmt: skip
        settings = {"dicom_sources": [pacs], "dicom_order_source": "pacs", **settings}
    started = make_node(
        dicom_hl7_port=free_port(), dicom_hl7_allowed_hosts=["127.0.0.1"], **settings
    ).start()
    started.port_hl7 = int(started.env["SCANTUNE_DICOM_HL7_PORT"])
    return started


@pytest.fixture
def node(make_node: Callable[..., Gunicorn], orthanc: Orthanc) -> Gunicorn:
    return hl7_node(make_node, orthanc)


def send(node: Gunicorn, message: bytes) -> str:
    """The ACK code the node answers `message` with."""
    return parse_ack(exchange("127.0.0.1", node.port_hl7, message, timeout_s=30)).code


def test_an_order_fetches_its_exam_and_the_result_reaches_the_pacs(
    node: Gunicorn, orthanc: Orthanc, capsys: pytest.CaptureFixture[str]
) -> None:
    study = make_study(2)
    for ds in study:
        ds.AccessionNumber = "RIS-7"
    store_in_pacs(orthanc.url, study)
    assert send(node, orm(obr18="RIS-7")) == "AA"
    uid = study[0].StudyInstanceUID
    reports = wait_until(lambda: orthanc.reports(uid), QUIET_S + SLACK_S, "the SR reaches Orthanc")
    assert referenced(reports[0]) == {ds.SOPInstanceUID for ds in study}
    (order,) = of(node, "RIS-7")
    assert (order["state"], order["study_instance_uids"]) == ("fetched", [uid])
    assert main(["series", "orders", "--url", node.url, "--api-key", OPS_KEY]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["ID", "ACCESSION", "STATE"]
    assert line.split()[1:4] == ["RIS-7", "fetched", "0"] and line.endswith(uid)
    assert node.metric("scantune_dicom_orders_total", outcome="fetched") == 1


def test_an_order_for_an_exam_not_in_the_pacs_yet_waits_for_it(
    node: Gunicorn, orthanc: Orthanc
) -> None:
    assert send(node, orm(obr18="RIS-8")) == "AA"
    assert send(node, orm(obr18="RIS-8")) == "AA"  # sent again: the one order is enough
    waiting = wait_until(
        lambda: [o for o in of(node, "RIS-8") if o["attempts"] >= 1], SLACK_S, "a first try"
    )
    assert len(of(node, "RIS-8")) == 1
    assert (waiting[0]["state"], waiting[0]["last_error"]) == ("waiting", "not in the PACS yet")
    study = make_study(1)
    study[0].AccessionNumber = "RIS-8"
    store_in_pacs(orthanc.url, study)  # the exam reaches the PACS
    wait_until(lambda: orthanc.reports(study[0].StudyInstanceUID), SLACK_S * 2, "its SR")
    assert of(node, "RIS-8")[0]["state"] == "fetched"

    assert send(node, orm(obr18="RIS-9")) == "AA"  # never reaches the PACS, then called off
    assert send(node, omi("CA", ipc1="RIS-9")) == "AA"  # by a v2.5 RIS: OMI^O23, IPC-1
    assert of(node, "RIS-9")[0]["state"] == "cancelled"
    assert send(node, omi(ipc1="RIS-10^HOSP")) == "AA"
    assert of(node, "RIS-10")[0]["state"] == "waiting"
    log = node.log_text()
    for private in ("RIS-8", "RIS-9", "RIS-10", "P-1", study[0].StudyInstanceUID):
        assert private not in log


def test_what_is_not_an_order_is_answered_and_strangers_are_not(node: Gunicorn) -> None:
    ready = requests.get(f"{node.url}/readyz", timeout=10).json()
    assert ready["checks"]["hl7"] == "ok"
    adt = orm().replace(b"ORM^O01^ORM_O01", b"ADT^A08^ADT_A01")
    assert send(node, adt) == "AR"
    assert send(node, orm(obr18="")) == "AE"
    assert node.items("/v1/orders", OPS_KEY) == []
    assert node.metric("scantune_dicom_orders_total", outcome="refused") == 2
    # two messages over one connection, as engines keep theirs open
    with socket.create_connection(("127.0.0.1", node.port_hl7), timeout=10) as conn:
        for accession in ("RIS-10", "RIS-11"):
            conn.sendall(b"\x0b" + orm(obr18=accession) + b"\x1c\r")
            answer = b""
            while b"\x1c\r" not in answer:
                answer += conn.recv(4096)
            assert parse_ack(answer.strip(b"\x0b\x1c\r")).code == "AA"
    assert {o["accession_number"] for o in node.items("/v1/orders", OPS_KEY)} == {
        "RIS-10",
        "RIS-11",
    }


def test_a_sender_not_allowed_is_closed_on(make_node: Callable[..., Gunicorn]) -> None:
    node = make_node(
        dicom_sources=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}],
        dicom_hl7_port=free_port(),
        dicom_hl7_allowed_hosts=["10.9.9.9"],  # not loopback
        dicom_order_source="pacs",
    ).start()
    port = int(node.env["SCANTUNE_DICOM_HL7_PORT"])
    with pytest.raises((MllpError, OSError)):
        exchange("127.0.0.1", port, orm(), timeout_s=10)
    assert node.metric("scantune_dicom_orders_total", outcome="refused") == 1
