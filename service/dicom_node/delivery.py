"""Sending a result to a destination: C-STORE (pynetdicom as SCU), STOW-RS (dicomweb-client)
or, rendered from the SR, an HL7 v2 ORU^R01 over MLLP or a FHIR R4 transaction over HTTP.

A send either succeeds (the destination has the result) or raises `NotDelivered`, and the
queue tries again later with back-off; or `Rejected`, when the destination refused the result
for what it is (sending the same bytes again cannot succeed), and the delivery stops there
until a person has it sent again. Sending the same SR twice (a crash between the send and
its record) gives the destination the same SOP Instance UID again, which a PACS keeps once; an
HL7 receiver gets the same message control ID (MSH-10) again; a FHIR server finds each
resource's identifier taken and creates nothing (conditional creates).
"""

from __future__ import annotations

import io
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter

from service.dicom_node.peers import DicomDestination, FhirDestination, Hl7Destination, OAuthClient

# C-STORE statuses meaning "stored": success, and the warnings (coercion, elements discarded,
# data set does not match the SOP class: stored all the same).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
# HTTP answers that refuse the request itself (malformed, too large, a type or content the
# server will not take); the rest (401/403 credentials, 404 a wrong URL, 408, 429, 5xx) may
# pass once the server or the settings are mended, so they are retried.
REFUSING_HTTP = frozenset({400, 413, 415, 422})


class NotDelivered(Exception):
    """The destination did not take the result (its text names no patient data)."""


class Rejected(NotDelivered):
    """The destination refused this result for what it is: not retried."""


def refusing_c_store(code: int) -> bool:
    """A C-STORE failure about the data set itself (PS3.4 B.2.3, PS3.7 C): SOP class not
    supported, invalid instance, data set does not match the SOP class (A9xx), cannot
    understand (Cxxx). Out of resources (A7xx), not authorized and the rest are retried."""
    return code in (0x0117, 0x0122) or 0xA900 <= code <= 0xA9FF or 0xC000 <= code <= 0xCFFF


class Sender(Protocol):
    kind: str
    attention_maps: bool  # whether it takes the series' maps (`service.dicom_node.maps`)

    def send(self, sr_file: bytes, maps: Sequence[bytes] = ()) -> None: ...


class CStoreSender:
    kind = "dimse"

    def __init__(
        self,
        destination: DicomDestination,
        calling_ae: str,
        timeout_s: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.destination, self.calling_ae, self.timeout_s = destination, calling_ae, timeout_s
        self.tls, self.attention_maps = tls, destination.attention_maps

    def send(self, sr_file: bytes, maps: Sequence[bytes] = ()) -> None:
        """The SR, then its maps, over one association; delivered when each is stored."""
        from pydicom import dcmread
        from pynetdicom import AE

        datasets = [dcmread(io.BytesIO(f)) for f in (sr_file, *maps)]
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
            if code is not None and refusing_c_store(code):
                raise Rejected(f"C-STORE refused: status 0x{code:04X}")
            if code not in STORED:
                shown = "no answer" if code is None else f"status 0x{code:04X}"
                raise NotDelivered(f"C-STORE failed: {shown}")


class ContextAdapter(HTTPAdapter):
    """HTTPS checked with a given SSL context: requests takes only a CA bundle's path, which
    would replace the public CAs instead of adding the hospital's."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **kwargs)


def https_session(session: requests.Session, context: ssl.SSLContext | None) -> requests.Session:
    """`session`, its HTTPS peers checked against `context` (the public CAs and the
    hospital's: `SCANTUNE_DICOM_HTTPS_CA_FILE`); None leaves requests' own CAs."""
    if context is not None:
        session.mount("https://", ContextAdapter(context))
    return session


class OAuthTokens:
    """Bearer tokens by the client-credentials grant (requests-oauthlib), each kept until
    shortly before it expires. Not getting one is a failed send like any other: the queue
    tries again with back-off. Neither the secret nor a token is ever in an error's text."""

    RENEW_BEFORE_S = 30.0

    def __init__(
        self, client: OAuthClient, timeout_s: float, https: ssl.SSLContext | None = None
    ) -> None:
        self.client, self.timeout_s, self.https = client, timeout_s, https
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def bearer(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                self._token, lifetime = self._fetch()
                self._renew_at = (
                    time.monotonic() + lifetime - min(self.RENEW_BEFORE_S, lifetime / 2)
                )
            return self._token

    def forget(self) -> None:
        """Drop the token (the destination refused it): the next send asks for a new one."""
        with self._lock:
            self._token = None

    def _fetch(self) -> tuple[str, float]:
        from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error
        from requests.auth import HTTPBasicAuth
        from requests_oauthlib import OAuth2Session

        c = self.client
        try:
            secret = c.client_secret_file.read_text().strip()
        except OSError as exc:
            raise NotDelivered(f"OAuth client secret unreadable ({type(exc).__name__})") from None
        # The scope goes in the request body only: a server may grant less than asked (its
        # gateway then decides), which the session's own scope check would take for an error.
        session = OAuth2Session(client=BackendApplicationClient(client_id=c.client_id))
        https_session(session, self.https)
        try:
            token = session.fetch_token(
                c.token_url,
                auth=HTTPBasicAuth(c.client_id, secret),
                timeout=self.timeout_s,
                scope=c.scope,
            )
        except OAuth2Error as exc:  # the endpoint's own error code: invalid_client...
            raise NotDelivered(f"OAuth token refused ({exc.error})") from None
        except (requests.RequestException, OSError, ValueError) as exc:
            raise NotDelivered(f"OAuth token request failed ({type(exc).__name__})") from None
        finally:
            session.close()
        return str(token["access_token"]), float(token.get("expires_in") or 3600)


class Credentials:
    """The Authorization header of an HTTP destination: an OAuth bearer token, the value of a
    file read at each send (a rotated secret is picked up), or none."""

    def __init__(
        self,
        authorization_file: Path | None,
        oauth: OAuthClient | None,
        timeout_s: float,
        https: ssl.SSLContext | None,
    ) -> None:
        self.authorization_file = authorization_file
        self.tokens = OAuthTokens(oauth, timeout_s, https) if oauth else None

    def headers(self) -> dict[str, str]:
        if self.tokens is not None:
            return {"Authorization": f"Bearer {self.tokens.bearer()}"}
        if self.authorization_file is None:
            return {}
        try:
            return {"Authorization": self.authorization_file.read_text().strip()}
        except OSError as exc:
            raise NotDelivered(f"authorization file unreadable ({type(exc).__name__})") from None

    def refused(self) -> None:
        """The destination answered 401: a token revoked or expired early is asked anew."""
        if self.tokens is not None:
            self.tokens.forget()


class StowSender:
    kind = "stow"

    def __init__(
        self, destination: DicomDestination, timeout_s: float, https: ssl.SSLContext | None = None
    ) -> None:
        self.url, self.timeout_s, self.https = str(destination.stow_url), timeout_s, https
        self.credentials = Credentials(
            destination.authorization_file, destination.oauth, timeout_s, https
        )
        self.attention_maps = destination.attention_maps

    def send(self, sr_file: bytes, maps: Sequence[bytes] = ()) -> None:
        """The SR and its maps in one STOW-RS request."""
        from dicomweb_client import DICOMwebClient
        from pydicom import dcmread

        datasets = [dcmread(io.BytesIO(f)) for f in (sr_file, *maps)]
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

        from service.dicom_node.mllp import MllpError, exchange
        from service.hospital.hl7v2 import build_oru, control_id, parse_ack
        from service.hospital.sr_findings import NotReportable

        sr, d = dcmread(io.BytesIO(sr_file)), self.destination
        try:
            images = [dcmread(io.BytesIO(m)) for m in maps]
            message = build_oru(sr, self.envelope, images, d.attention_map_max_bytes)
        except NotReportable as exc:  # the SR will not change: no message will ever be made
            raise Rejected(f"no HL7 message: {exc}") from None
        try:
            answer = exchange(d.host, d.port, message.encode(), self.timeout_s, self.tls)
            ack = parse_ack(answer)
        except (OSError, MllpError, ValueError) as exc:
            shown = str(exc) if isinstance(exc, MllpError) else type(exc).__name__
            raise NotDelivered(f"MLLP failed ({shown})") from None
        if ack.control_id != control_id(sr):
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

        from service.hospital.fhir import FHIR_MEDIA_TYPE
        from service.hospital.fhir_transaction import transaction_from_sr
        from service.hospital.sr_findings import NotReportable

        try:
            images = [dcmread(io.BytesIO(m)) for m in maps]
            bundle = transaction_from_sr(dcmread(io.BytesIO(sr_file)), images)
        except NotReportable as exc:
            raise Rejected(f"no FHIR bundle: {exc}") from None
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


def sender_for(
    destination: DicomDestination,
    calling_ae: str,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
    https: ssl.SSLContext | None = None,
) -> Sender:
    """The sender of one destination; `tls` is the context for a destination marked `tls`,
    `https` the one HTTPS peers are checked with (None: requests' own)."""
    if destination.hl7 is not None:
        return Hl7Sender(destination.hl7, timeout_s, tls if destination.hl7.tls else None)
    if destination.fhir is not None:
        return FhirSender(destination.fhir, timeout_s, https)
    if destination.stow_url:
        return StowSender(destination, timeout_s, https)
    return CStoreSender(destination, calling_ae, timeout_s, tls if destination.tls else None)
