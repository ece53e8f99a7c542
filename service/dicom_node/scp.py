"""The Storage SCP: pynetdicom accepts C-STORE of the images the node can classify, and
C-ECHO, from the callers of `SCANTUNE_DICOM_ALLOWED_CALLERS` only (AE title and address both;
anyone else is rejected at association, before a byte of data)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

from pydicom import uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from service.dicom_node import metrics
from service.dicom_node.intake import Intake, Refused, describe
from service.dicom_node.moves import Arrivals
from service.dicom_node.peers import DicomCaller
from service.dicom_node.redact import uid_hash

if TYPE_CHECKING:
    from pynetdicom.transport import ThreadedAssociationServer

    from service.dicom_node.queue import InstanceMeta

log = logging.getLogger("scantune.dicom")

# Single-frame projection radiography and the cross-sectional and secondary-capture images a
# 2D classifier can be routed (the routing rules choose which reach a model).
STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray, for presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray, for presentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.1.3",  # Digital Intra-Oral X-Ray, for presentation
    "1.2.840.10008.5.1.4.1.1.1.3.1",  # Digital Intra-Oral X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
)
TRANSFER_SYNTAXES = (
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.RLELossless,
)
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


class CallerList:
    """The allow-list, host names resolved once to their addresses."""

    def __init__(self, callers: list[DicomCaller]) -> None:
        self.allowed = {(c.ae_title.strip(), addr) for c in callers for addr in _addresses(c.host)}

    def allows(self, ae_title: str, address: str) -> bool:
        return (ae_title.strip(), _normal(address)) in self.allowed


class HostList:
    """Addresses allowed to connect (the HL7 order senders), host names resolved once."""

    def __init__(self, hosts: list[str]) -> None:
        self.allowed = {addr for host in hosts for addr in _addresses(host)}

    def allows(self, address: str) -> bool:
        return _normal(address) in self.allowed


def _addresses(host: str) -> set[str]:
    try:
        return {_normal(str(ipaddress.ip_address(host)))}
    except ValueError:
        try:
            return {_normal(str(info[4][0])) for info in socket.getaddrinfo(host, None)}
        except OSError:
            log.warning("allowed caller host cannot be resolved; it matches no one")
            return set()


def _normal(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


class StorageSCP:
    def __init__(
        self, ae_title: str, callers: CallerList, intake: Intake, arrivals: Arrivals | None = None
    ) -> None:
        """`arrivals`: counts what comes of the node's own C-MOVEs (`moves`)."""
        self.callers, self.intake = callers, intake
        self.arrivals = arrivals or Arrivals()
        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = True
        self.ae.maximum_associations = 16
        for sop_class in STORAGE_CLASSES:
            self.ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        self.ae.add_supported_context(Verification)
        self.servers: list[ThreadedAssociationServer] = []

    def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen (in pynetdicom's threads), over TLS when given a context; returns the port,
        which `port` 0 picks. Called again, it listens on another port too (plain and TLS side
        by side), with the same callers allowed and the same intake."""
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_request),
            (evt.EVT_C_STORE, self._on_store),
        ]
        server = self.ae.start_server(
            (host, port), block=False, evt_handlers=handlers, ssl_context=tls
        )
        self.servers.append(server)  # type: ignore[arg-type]
        return int(server.server_address[1])  # type: ignore[union-attr]

    @property
    def listening(self) -> bool:
        return bool(self.servers)

    def stop(self) -> None:
        while self.servers:
            self.servers.pop().shutdown()

    def _on_request(self, event: Any) -> None:
        requestor = event.assoc.requestor
        calling = str(requestor.primitive.calling_ae_title)  # ae_title is set only later
        if not self.callers.allows(calling, requestor.address):
            metrics.REJECTED.inc()
            log.warning("association refused: calling AE and address are not allowed")
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, user, calling AE
            event.assoc.kill()  # as pynetdicom's own rejections do: the A-ASSOCIATE-RJ goes out

    def _on_store(self, event: Any) -> int:
        calling = event.assoc.requestor.ae_title
        meta: InstanceMeta | None = None
        try:
            meta = describe(event.dataset, calling)
            self.intake.accept(event.encoded_dataset(), meta, "dimse")
            status = SUCCESS
        except Refused as exc:
            metrics.RECEIVED.labels("dimse", "refused").inc()
            log.warning("C-STORE refused: %s", exc)
            status = CANNOT_UNDERSTAND
        except Exception as exc:  # not kept: the sender keeps it and may retry
            # The type only: a database error's text would carry the instance's UIDs.
            sop = uid_hash(str(event.request.AffectedSOPInstanceUID))
            log.error("C-STORE of %s not kept: %s", sop, type(exc).__name__)
            status = OUT_OF_RESOURCES
        # A sub-operation of a C-MOVE of the node's, kept or not: counted for it (a sign of
        # life of its source too), where the instance names its study.
        study = meta.study_uid if meta else _study_of(event)
        if study:
            moved_by = event.request.MoveOriginatorMessageID
            self.arrivals.note(moved_by, study, stored=status == SUCCESS)
        return status


def _study_of(event: Any) -> str:
    """The Study Instance UID of a C-STORE's data set that could not be described; "" where
    it has none or cannot be read."""
    try:
        return str(event.dataset.get("StudyInstanceUID") or "")
    except Exception:  # an undecodable data set: the refusal above has said so
        return ""
