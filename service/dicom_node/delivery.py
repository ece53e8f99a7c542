"""Sending a result to a destination over DICOM: C-STORE (pynetdicom as SCU) or STOW-RS
(dicomweb-client); the HL7 v2 and FHIR senders are in `service.dicom_node.report_delivery`.
`sender_for` picks one per destination.

A send either succeeds (the destination has the result) or raises `NotDelivered`, and the
queue tries again later with back-off; or `Rejected`, when the destination refused the result
for what it is (sending the same bytes again cannot succeed), and the delivery stops there
until a person has it sent again. Sending the same SR twice (a crash between the send and
its record) gives the destination the same SOP Instance UID again, which a PACS keeps once; an
HL7 receiver gets the same message control ID (MSH-10) again; a FHIR server finds each
resource's identifier taken and creates nothing (conditional creates).

A recalled version's results are withdrawn the same way (`withdraw`): a PACS gets an IHE
IOCM rejection note (`service.hospital.rejection`) over the same transport, an HL7 receiver
the result posted as wrong, a FHIR server each resource marked entered-in-error.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Sequence
from typing import Protocol

import requests

from service.dicom_node.failures import REFUSING_HTTP, NotDelivered, Rejected
from service.dicom_node.http_auth import Credentials, https_session
from service.dicom_node.peers import DicomDestination

__all__ = ["NotDelivered", "Rejected", "Sender", "sender_for"]

# C-STORE statuses meaning "stored": success, and the warnings (coercion, elements discarded,
# data set does not match the SOP class: stored all the same).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
# An archive that applies IOCM (dcm4chee) answers a rejection note it has with A770, "rejection
# note already received": a resend after a lost answer, withdrawn all the same.
NOTE_KNOWN = 0xA770


def refusing_c_store(code: int) -> bool:
    """A C-STORE failure about the data set itself (PS3.4 B.2.3, PS3.7 C): SOP class not
    supported, invalid instance, data set does not match the SOP class (A9xx), cannot
    understand (Cxxx). Out of resources (A7xx), not authorized and the rest are retried."""
    return code in (0x0117, 0x0122) or 0xA900 <= code <= 0xA9FF or 0xC000 <= code <= 0xCFFF


class Sender(Protocol):
    kind: str
    attention_maps: bool  # whether it takes the series' maps (`service.dicom_node.maps`)

    def send(self, sr_file: bytes, maps: Sequence[bytes] = ()) -> None: ...

    def withdraw(self, sr_file: bytes, maps: Sequence[bytes], reason: str) -> None:
        """Tell the destination the result it was sent (the SR, with `maps` where it takes
        them) is void: its version was recalled, for `reason`."""
        ...


class CStoreSender:
    kind = "dimse"

    def __init__(
        self,
        destination: DicomDestination,
        calling_ae: str,
        timeout_s: float,
        tls: ssl.SSLContext | None = None,
        uid_root: str | None = None,
    ) -> None:
        self.destination, self.calling_ae, self.timeout_s = destination, calling_ae, timeout_s
        self.tls, self.attention_maps, self.uid_root = tls, destination.attention_maps, uid_root

    def send(self, sr_file: bytes, maps: Sequence[bytes] = ()) -> None:
        """The SR, then its maps, over one association; delivered when each is stored."""
        self._store([sr_file, *maps])

    def withdraw(self, sr_file: bytes, maps: Sequence[bytes], reason: str) -> None:
        note = rejection_note(sr_file, maps, reason, self.uid_root)
        self._store([note], stored=STORED | {NOTE_KNOWN})

    def _store(self, files: Sequence[bytes], stored: set[int] = STORED) -> None:
        from pydicom import dcmread
        from pynetdicom import AE

        datasets = [dcmread(io.BytesIO(f)) for f in files]
        ae = AE(ae_title=self.calling_ae)
        for sop_class, syntax in dict.fromkeys(
            (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets
        ):
            ae.add_requested_context(sop_class, [syntax])
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        dest = self.destination
        tls_args = (self.tls, str(dest.host)) if self.tls is not None else None
        assoc = ae.associate(
            str(dest.host), int(dest.port or 104), ae_title=str(dest.ae_title), tls_args=tls_args
        )
        if not assoc.is_established:
            raise NotDelivered("association not established (destination down or refusing)")
        try:
            statuses = [assoc.send_c_store(ds) for ds in datasets]
        except ValueError:  # pynetdicom: the destination accepted no context for the class
            raise Rejected("C-STORE refused: the destination takes no SOP class sent") from None
        finally:
            assoc.release()
        for status in statuses:
            code = int(status.Status) if "Status" in status else None
            if code in stored:
                continue
            if code is not None and refusing_c_store(code):
                raise Rejected(f"C-STORE refused: status 0x{code:04X}")
            shown = "no answer" if code is None else f"status 0x{code:04X}"
            raise NotDelivered(f"C-STORE failed: {shown}")


class StowSender:
    kind = "stow"

    def __init__(
        self,
        destination: DicomDestination,
        timeout_s: float,
        https: ssl.SSLContext | None = None,
        uid_root: str | None = None,
    ) -> None:
        self.url, self.timeout_s, self.https = str(destination.stow_url), timeout_s, https
        self.credentials = Credentials(
            destination.authorization_file, destination.oauth, timeout_s, https
        )
        self.attention_maps, self.uid_root = destination.attention_maps, uid_root

    def send(self, sr_file: bytes, maps: Sequence[bytes] = ()) -> None:
        """The SR and its maps in one STOW-RS request."""
        self._store([sr_file, *maps])

    def withdraw(self, sr_file: bytes, maps: Sequence[bytes], reason: str) -> None:
        self._store([rejection_note(sr_file, maps, reason, self.uid_root)])

    def _store(self, files: Sequence[bytes]) -> None:
        from dicomweb_client import DICOMwebClient
        from pydicom import dcmread

        datasets = [dcmread(io.BytesIO(f)) for f in files]
        headers = self.credentials.headers()
        session = https_session(requests.Session(), self.https)
        client = DICOMwebClient(self.url, session=session, headers=headers, timeout=self.timeout_s)
        try:
            answer = client.store_instances(datasets)
        except (requests.RequestException, OSError) as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 401:
                self.credentials.refused()
            if status in REFUSING_HTTP:
                raise Rejected(f"STOW-RS refused ({status})") from None
            raise NotDelivered(f"STOW-RS failed ({status or type(exc).__name__})") from None
        finally:
            session.close()
        if answer.get("FailedSOPSequence"):  # servers may send it empty
            raise NotDelivered("STOW-RS: the server lists an instance as failed")


def rejection_note(
    sr_file: bytes, maps: Sequence[bytes], reason: str, uid_root: str | None
) -> bytes:
    """The IOCM rejection note of a result (its SR and the maps sent with it); `Rejected`
    when the SR cannot make one (it will not change)."""
    from pydicom import dcmread

    from service.hospital.rejection import build_rejection_note
    from service.hospital.sr_findings import NotReportable

    try:
        images = [dcmread(io.BytesIO(m)) for m in maps]
        return build_rejection_note(dcmread(io.BytesIO(sr_file)), images, reason, uid_root)
    except NotReportable as exc:
        raise Rejected(f"no rejection note: {exc}") from None


def sender_for(
    destination: DicomDestination,
    calling_ae: str,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
    https: ssl.SSLContext | None = None,
    uid_root: str | None = None,
) -> Sender:
    """The sender of one destination; `tls` is the context for a destination marked `tls`,
    `https` the one HTTPS peers are checked with (None: requests' own); `uid_root` the root
    of the UIDs the node makes (its rejection notes')."""
    from service.dicom_node.report_delivery import FhirSender, Hl7Sender

    if destination.hl7 is not None:
        return Hl7Sender(destination.hl7, timeout_s, tls if destination.hl7.tls else None)
    if destination.fhir is not None:
        return FhirSender(destination.fhir, timeout_s, https)
    if destination.stow_url:
        return StowSender(destination, timeout_s, https, uid_root)
    return CStoreSender(
        destination, calling_ae, timeout_s, tls if destination.tls else None, uid_root
    )
