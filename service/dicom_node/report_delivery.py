"""Sending a result rendered from its SR: an HL7 v2 ORU^R01 over MLLP, or a FHIR R4
transaction over HTTP (the DICOM senders, and how a send ends, are in
`service.dicom_node.delivery`). A recalled version's result is withdrawn in the same format:
an ORU posting it as wrong, a transaction marking it entered-in-error."""

from __future__ import annotations

import io
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING

import requests

from service.dicom_node.failures import REFUSING_HTTP, NotDelivered, Rejected
from service.dicom_node.http_auth import Credentials, https_session
from service.dicom_node.peers import FhirDestination, Hl7Destination

if TYPE_CHECKING:
    from fhir.resources.R4B.bundle import Bundle


class Hl7Sender:
    """The SR (with its attention maps as ED) as an ORU^R01 (`service.hospital.hl7v2`) over
    MLLP; delivered on AA or CA."""

    kind = "hl7"

    def __init__(
        self, destination: Hl7Destination, timeout_s: float, tls: ssl.SSLContext | None = None
    ) -> None:
        from service.hospital.hl7v2 import Envelope

        self.destination, self.timeout_s, self.tls = destination, timeout_s, tls
        self.attention_maps = destination.attention_maps
        d = destination
        self.envelope = Envelope(
            d.sending_application,
            d.sending_facility,
            d.receiving_application,
            d.receiving_facility,
            d.processing_id,
        )

    def send(self, sr_file: bytes, maps: Sequence[bytes] = ()) -> None:
        from pydicom import dcmread

        from service.hospital.hl7v2 import build_oru, control_id
        from service.hospital.sr_findings import NotReportable

        sr, d = dcmread(io.BytesIO(sr_file)), self.destination
        try:
            images = [dcmread(io.BytesIO(m)) for m in maps]
            message = build_oru(sr, self.envelope, images, d.attention_map_max_bytes)
        except NotReportable as exc:  # the SR will not change: no message will ever be made
            raise Rejected(f"no HL7 message: {exc}") from None
        self._exchange(message, control_id(sr))

    def withdraw(self, sr_file: bytes, maps: Sequence[bytes], reason: str) -> None:
        """The result posted as wrong, row for row with the maps it was sent with, under its
        own control ID."""
        from pydicom import dcmread

        from service.hospital.hl7_withdrawal import build_withdrawal, withdrawal_control_id
        from service.hospital.sr_findings import NotReportable

        sr, d = dcmread(io.BytesIO(sr_file)), self.destination
        try:
            images = [dcmread(io.BytesIO(m)) for m in maps]
            message = build_withdrawal(sr, self.envelope, reason, images, d.attention_map_max_bytes)
        except NotReportable as exc:
            raise Rejected(f"no HL7 withdrawal: {exc}") from None
        self._exchange(message, withdrawal_control_id(sr))

    def _exchange(self, message: str, control: str) -> None:
        """Send over MLLP; delivered when the ACK accepts the message `control` names."""
        from service.dicom_node.mllp import MllpError, exchange
        from service.hospital.hl7v2 import parse_ack

        d = self.destination
        try:
            answer = exchange(d.host, d.port, message.encode(), self.timeout_s, self.tls)
            ack = parse_ack(answer)
        except (OSError, MllpError, ValueError) as exc:
            shown = str(exc) if isinstance(exc, MllpError) else type(exc).__name__
            raise NotDelivered(f"MLLP failed ({shown})") from None
        if ack.control_id != control:
            raise NotDelivered("HL7 ACK acknowledges another message")
        if ack.code == "CR":  # enhanced mode's commit reject: the message type, version or
            raise Rejected("HL7 ACK CR")  # processing ID is not taken, whenever it is sent
        if not ack.accepted:  # AR and AE also mean "down" or "try again" to many engines
            raise NotDelivered(f"HL7 ACK {ack.code or 'without a code'}")


class FhirSender:
    """The SR (and its attention maps, as Media) as a FHIR R4 transaction
    (`service.hospital.fhir_transaction`) POSTed to the server's base URL; delivered when the
    server answers every entry with a 2xx."""

    kind = "fhir"

    def __init__(
        self, destination: FhirDestination, timeout_s: float, https: ssl.SSLContext | None = None
    ) -> None:
        self.url, self.timeout_s, self.https = destination.url, timeout_s, https
        self.attention_maps = destination.attention_maps
        self.credentials = Credentials(
            destination.authorization_file, destination.oauth, timeout_s, https
        )

    def send(self, sr_file: bytes, maps: Sequence[bytes] = ()) -> None:
        from pydicom import dcmread

        from service.hospital.fhir_transaction import transaction_from_sr
        from service.hospital.sr_findings import NotReportable

        try:
            images = [dcmread(io.BytesIO(m)) for m in maps]
            bundle = transaction_from_sr(dcmread(io.BytesIO(sr_file)), images)
        except NotReportable as exc:
            raise Rejected(f"no FHIR bundle: {exc}") from None
        self._post(bundle)

    def withdraw(self, sr_file: bytes, maps: Sequence[bytes], reason: str) -> None:
        """The report, its observations and maps marked entered-in-error (conditional
        updates by the identifiers they were created by)."""
        from pydicom import dcmread

        from service.hospital.fhir_transaction import withdrawal_from_sr
        from service.hospital.sr_findings import NotReportable

        try:
            images = [dcmread(io.BytesIO(m)) for m in maps]
            bundle = withdrawal_from_sr(dcmread(io.BytesIO(sr_file)), images, reason)
        except NotReportable as exc:
            raise Rejected(f"no FHIR withdrawal: {exc}") from None
        self._post(bundle)

    def _post(self, bundle: Bundle) -> None:
        from service.hospital.fhir import FHIR_MEDIA_TYPE

        media = {"Content-Type": FHIR_MEDIA_TYPE, "Accept": FHIR_MEDIA_TYPE}
        session = https_session(requests.Session(), self.https)
        try:
            answer = session.post(
                self.url.rstrip("/"),  # a transaction goes to the base URL itself
                data=bundle.model_dump_json().encode(),
                headers={**media, **self.credentials.headers()},
                timeout=self.timeout_s,
                allow_redirects=False,  # a 3xx is no delivery, and the token stays here
            )
        except (requests.RequestException, OSError) as exc:
            raise NotDelivered(f"FHIR transaction failed ({type(exc).__name__})") from None
        finally:
            session.close()
        if answer.status_code == 401:
            self.credentials.refused()
        if answer.status_code in REFUSING_HTTP:
            raise Rejected(f"FHIR transaction refused ({answer.status_code})")
        if not 200 <= answer.status_code < 300:  # requests' `ok` takes a 3xx too
            raise NotDelivered(f"FHIR transaction failed ({answer.status_code})")
        refused = _refused_entries(answer, len(bundle.entry or []))
        if refused:
            shown = f"FHIR transaction: entries answered {', '.join(refused)}"
            if all(code.isdigit() and int(code) in REFUSING_HTTP for code in refused):
                raise Rejected(shown)
            raise NotDelivered(shown)


def _refused_entries(answer: requests.Response, sent: int) -> list[str]:
    """The status codes of the transaction-response's entries that are no 2xx (a server that
    answers 200 to a transaction has done all of it, but one may say otherwise per entry); a
    body that is no transaction-response of `sent` entries counts as refused."""
    try:
        entries = answer.json().get("entry") or []
        codes = [str(entry["response"]["status"]).split()[0] for entry in entries]
    except (ValueError, AttributeError, KeyError, TypeError, IndexError):
        return ["an unreadable answer"]
    if len(codes) != sent:
        return [f"{len(codes)} of {sent} entries"]
    return sorted({code for code in codes if not code.startswith("2")})
