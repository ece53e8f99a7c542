"""DICOM over TLS (PS3.15 B.1): the node's port with a certificate a hospital CA signed,
callers that must present one too (mutual TLS), and C-STORE results sent over TLS. Real TLS
(the standard library's, with openssl-made certificates) and pynetdicom on both ends."""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from service.config import DicomNodeSettings
from service.dicom_node.delivery import NotDelivered, sender_for
from service.dicom_node.peers import DicomDestination
from service.dicom_node.tables import SeriesRow
from tests.conftest import HospitalCA, free_port
from tests.dicom_node.parts import MODALITY_AE, NODE_AE, SOURCES, make_study

ECHO = "1.2.840.10008.1.1"
RUN: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 30}


@pytest.fixture
def tls_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hospital_ca: HospitalCA
) -> Iterator[Callable[..., Any]]:
    """The node in-process (its HTTP app unused) with the DICOM port over TLS: its services
    (`dicom_port`, and `dicom_tls_port` when TLS has a port of its own)."""
    from service.dicom_node.app import EXTENSION, create_app, stop_node

    made: list[Any] = []

    def start(**extra: str) -> Any:
        cert, key = hospital_ca.issue("localhost", "127.0.0.1")
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'node.db'}",
            "DICOM_SPOOL_DIR": str(tmp_path / "spool"),
            "DICOM_ROUTES": json.dumps([{"model": "chest-xray"}]),
            "DICOM_ALLOWED_CALLERS": json.dumps([{"ae_title": MODALITY_AE, "host": "127.0.0.1"}]),
            "DICOM_PORT": "0",
            "DICOM_TLS_CERT_FILE": str(cert),
            "DICOM_TLS_KEY_FILE": str(key),
            "AUTH_DISABLED": "true",
            **extra,
        }
        for name, value in env.items():
            monkeypatch.setenv(f"SCANTUNE_{name}", value)
        node = create_app().extensions[EXTENSION]
        made.append(node)
        return node

    yield start
    for node in made:
        stop_node(node)


def caller_tls(ca: HospitalCA, *, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.pem_file)
    if with_certificate:
        context.load_cert_chain(*ca.issue("modality.hospital.example", usage="clientAuth"))
    return context


def associate(port: int, tls: ssl.SSLContext | None, contexts: list[str] = [ECHO]) -> Any:  # noqa: B006
    ae = AE(ae_title=MODALITY_AE)
    ae.acse_timeout = ae.network_timeout = 5
    for context in contexts:
        ae.add_requested_context(context)
    return ae.associate(
        "127.0.0.1", port, ae_title=NODE_AE, tls_args=(tls, "localhost") if tls else None
    )


def test_the_dicom_port_speaks_tls_only_once_given_a_certificate(
    tls_node: Callable[..., Any], hospital_ca: HospitalCA
) -> None:
    port = tls_node().dicom_port
    plain = associate(port, None)
    assert not plain.is_established  # a plain A-ASSOCIATE-RQ is not understood
    secured = associate(port, caller_tls(hospital_ca, with_certificate=False))
    assert secured.is_established
    assert int(secured.send_c_echo().Status) == 0
    secured.release()
    study = make_study(2)
    ae = AE(ae_title=MODALITY_AE)
    for ds in study:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    tls = caller_tls(hospital_ca, with_certificate=False)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE, tls_args=(tls, "localhost"))
    assert [int(assoc.send_c_store(ds).Status) for ds in study] == [0, 0]
    assoc.release()


def test_a_tls_port_of_its_own_keeps_the_dicom_port_plain_beside_it(
    tls_node: Callable[..., Any], hospital_ca: HospitalCA
) -> None:
    """DICOM_TLS_PORT: TLS on its own port (DICOM's 2762) for the secure nodes, plain DICOM
    on the other (104) for modalities without TLS, both into the same intake, both behind
    the same allow-list of callers."""
    node = tls_node(DICOM_TLS_PORT="0", DICOM_TLS_CA_FILE=str(hospital_ca.pem_file))
    plain_port, tls_port = node.dicom_port, node.dicom_tls_port
    assert tls_port is not None and tls_port != plain_port
    mutual = caller_tls(hospital_ca, with_certificate=True)
    assert not associate(plain_port, mutual).is_established  # no TLS on the plain port
    assert not associate(tls_port, None).is_established  # nor plain DICOM on the TLS one
    assert not associate(tls_port, caller_tls(hospital_ca, with_certificate=False)).is_established
    studies = {port: make_study(1) for port in (plain_port, tls_port)}
    for port, study in studies.items():
        ae = AE(ae_title=MODALITY_AE)
        for ds in study:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        tls_args = (mutual, "localhost") if port == tls_port else None
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE, tls_args=tls_args)
        assert [int(assoc.send_c_store(ds).Status) for ds in study] == [0]
        assoc.release()
    with node.queue.engine.connect() as conn:
        kept = set(conn.scalars(select(SeriesRow.study_uid)))
    assert kept == {str(study[0].StudyInstanceUID) for study in studies.values()}
    stranger = AE(ae_title="STRANGER")
    stranger.add_requested_context(ECHO)
    assert not stranger.associate("127.0.0.1", plain_port, ae_title=NODE_AE).is_established


def test_with_a_ca_a_caller_must_present_a_certificate_it_signed(
    tls_node: Callable[..., Any], hospital_ca: HospitalCA, tmp_path: Path
) -> None:
    port = tls_node(DICOM_TLS_CA_FILE=str(hospital_ca.pem_file)).dicom_port
    anonymous = associate(port, caller_tls(hospital_ca, with_certificate=False))
    assert not anonymous.is_established
    stranger_ca = HospitalCA.create(tmp_path / "other-ca", "another hospital's CA")
    foreign = caller_tls(hospital_ca, with_certificate=False)
    foreign.load_cert_chain(*stranger_ca.issue("intruder.example", usage="clientAuth"))
    assert not associate(port, foreign).is_established
    known = associate(port, caller_tls(hospital_ca, with_certificate=True))
    assert known.is_established and int(known.send_c_echo().Status) == 0
    known.release()
    # dcmtk's echoscu, as a modality's stack would call it: with its certificate, and without
    cert, key = hospital_ca.issue("ct01.hospital.example", usage="clientAuth")
    dcmtk = ["echoscu", "-aet", MODALITY_AE, "-aec", NODE_AE, "+cf", str(hospital_ca.pem_file)]
    ok = subprocess.run([*dcmtk, "+tls", str(key), str(cert), "127.0.0.1", str(port)], **RUN)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([*dcmtk, "+tla", "127.0.0.1", str(port)], **RUN)
    assert refused.returncode != 0


@pytest.fixture
def tls_pacs(hospital_ca: HospitalCA) -> Iterator[tuple[int, list[str]]]:
    """A storage SCP over TLS, its certificate for "localhost": the SOP Instance UIDs it got."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0

    ae = AE(ae_title="PACS")
    ae.add_supported_context(dcmread(SOURCES[0]).SOPClassUID, ["1.2.840.10008.1.2.1"])
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
        ssl_context=hospital_ca.server_context("localhost"),
    )
    yield port, received
    server.shutdown()


def test_results_go_over_tls_to_a_destination_whose_certificate_checks_out(
    tls_pacs: tuple[int, list[str]], hospital_ca: HospitalCA, tmp_path: Path
) -> None:
    port, received = tls_pacs
    scan = dcmread(SOURCES[0])
    scan.SOPInstanceUID = scan.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    scan.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    path = tmp_path / "result.dcm"
    scan.save_as(path, enforce_file_format=True)
    dest = DicomDestination(ae_title="PACS", host="localhost", port=port, tls=True)
    trusting = DicomNodeSettings(dicom_tls_ca_file=hospital_ca.pem_file)
    sender_for(dest, NODE_AE, 5, trusting.dicom_client_tls()).send(path.read_bytes())
    assert received == [scan.SOPInstanceUID]
    untrusting = sender_for(dest, NODE_AE, 5, DicomNodeSettings().dicom_client_tls())
    with pytest.raises(NotDelivered):  # the system's CAs do not know the hospital's
        untrusting.send(path.read_bytes())
    plain = sender_for(dest.model_copy(update={"tls": False}), NODE_AE, 5)
    with pytest.raises(NotDelivered):
        plain.send(path.read_bytes())
    assert received == [scan.SOPInstanceUID]


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"dicom_tls_cert_file": "CERT"}, "go together"),
        ({"dicom_tls_port": 2762}, "dicom_tls_port needs"),
        (
            {"dicom_tls_cert_file": "CERT", "dicom_tls_key_file": "KEY", "dicom_tls_port": 11112},
            "must differ",
        ),
        ({"dicom_tls_cert_file": "CERT", "dicom_tls_key_file": "CA"}, "do not load"),
        ({"dicom_tls_ca_file": "/nonexistent/ca.pem"}, "does not load"),
        ({"dicom_destinations": [{"stow_url": "https://pacs/dicom-web", "tls": True}]}, "tls is"),
    ],
)
def test_a_half_given_or_unreadable_tls_setting_stops_the_node_at_start(
    hospital_ca: HospitalCA, settings: dict[str, Any], says: str
) -> None:
    cert, key = hospital_ca.issue("localhost")
    paths = {"CERT": str(cert), "KEY": str(key), "CA": str(hospital_ca.pem_file)}
    values = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in settings.items()}
    with pytest.raises(ValueError, match=says):
        DicomNodeSettings(**values)


def test_orders_over_tls_are_taken_and_plain_ones_are_not(
    tls_node: Callable[..., Any], hospital_ca: HospitalCA
) -> None:
    from service.dicom_node.mllp import MllpError, exchange
    from service.hospital.hl7v2 import parse_ack
    from tests.hospital.test_hl7_orders import orm

    pacs = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": free_port()}
    node = tls_node(
        DICOM_SOURCES=json.dumps([pacs]),
        DICOM_HL7_PORT="0",
        DICOM_HL7_ALLOWED_HOSTS='["127.0.0.1"]',
        DICOM_HL7_TLS="true",
        DICOM_ORDER_SOURCE="pacs",
    )
    with pytest.raises((MllpError, OSError)):  # plain MLLP is not understood
        exchange("127.0.0.1", node.hl7_port, orm(obr18="RIS-1"), timeout_s=5)
    trusting = ssl.create_default_context(cafile=hospital_ca.pem_file)
    ack = exchange("localhost", node.hl7_port, orm(obr18="RIS-2"), timeout_s=10, tls=trusting)
    assert parse_ack(ack).code == "AA"
    assert [o["accession_number"] for o in node.orders.page(None, 10)[0]] == ["RIS-2"]
    with pytest.raises(ValidationError, match="dicom_hl7_tls needs dicom_tls_cert_file"):
        DicomNodeSettings(dicom_hl7_tls=True, dicom_tls_cert_file=None, dicom_tls_key_file=None)
