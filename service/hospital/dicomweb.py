"""Scans fetched from a PACS by UID (QIDO-RS, WADO-RS) and reports stored back (STOW-RS).

`dicomweb-client` speaks the protocol; this module adds what a service needs around it:
auth from the environment or a mounted file, a timeout on every request, limits checked
before anything is retrieved, and each failure as the 4xx/5xx problem it is for the caller
(a UID the PACS does not hold: 404 naming it; the PACS down or refusing: 502; slow: 504).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from service.errors import (
    BadGateway,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unprocessable,
)

if TYPE_CHECKING:
    from dicomweb_client import DICOMwebClient
    from pydicom import Dataset

T = TypeVar("T")
UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
SERIES, INSTANCE, SOP_CLASS = "0020000E", "00080018", "00080016"
LIST_LIMIT = 1000
"""Most instances a QIDO-RS listing asks for: past it, a request names too many anyway."""
NOT_IMAGES = tuple(
    f"1.2.840.10008.5.1.4.1.1.{kind}." for kind in ("88", "11", "104", "9", "481", "66", "67", "68")
)
"""SOP class prefixes of what no model classifies: SR, presentation states, encapsulated
documents, waveforms, RT objects, raw data/registration/segmentation, surfaces."""


class DicomwebRef(BaseModel):
    """What to classify: a study, or one series of it, or one instance."""

    model_config = ConfigDict(extra="forbid")

    study_instance_uid: str = Field(pattern=UID_PATTERN, max_length=64)
    series_instance_uid: str | None = Field(default=None, pattern=UID_PATTERN, max_length=64)
    sop_instance_uid: str | None = Field(default=None, pattern=UID_PATTERN, max_length=64)

    def describe(self) -> str:
        parts = [
            ("study", self.study_instance_uid),
            ("series", self.series_instance_uid),
            ("instance", self.sop_instance_uid),
        ]
        return ", ".join(f"{kind} {uid}" for kind, uid in parts if uid)


@dataclass(frozen=True)
class DicomwebConfig:
    """Where the PACS is and how to log in (from `InferenceSettings`)."""

    url: str
    timeout_s: float = 10.0
    deadline_s: float = 60.0
    token: str | None = None
    token_file: Path | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None

    def headers(self) -> dict[str, str]:
        token = _secret(self.token, self.token_file)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def basic_auth(self) -> tuple[str, str] | None:
        password = _secret(self.password, self.password_file)
        return (self.username, password or "") if self.username else None


def _secret(value: str | None, path: Path | None) -> str | None:
    """A secret given inline, or read (each time: mounted secrets rotate) from a file."""
    if value:
        return value
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError:
        raise BadGateway("the DICOMweb credentials file cannot be read") from None


@dataclass(frozen=True)
class Fetched:
    """One retrieved instance: its bytes as a file, and the name results refer to it by."""

    name: str
    data: bytes


class Pacs:
    """A DICOMweb server: classify-by-reference's source and the SR's destination."""

    def __init__(self, config: DicomwebConfig) -> None:
        self.config = config

    def fetch(self, ref: DicomwebRef, *, max_files: int, max_bytes: int) -> list[Fetched]:
        """The image instances `ref` names (QIDO-RS lists them, WADO-RS retrieves each), in
        the order the PACS lists them; 413 past the file or byte limits, before retrieving
        more; 504 when the whole fetch takes longer than `deadline_s`."""
        return before_deadline(
            lambda: self._fetch(ref, max_files, max_bytes),
            self.config.deadline_s,
            f"the DICOMweb server did not send {ref.describe()} within"
            f" {self.config.deadline_s:g} s",
        )

    def _fetch(self, ref: DicomwebRef, max_files: int, max_bytes: int) -> list[Fetched]:
        client = self._client()
        out: list[Fetched] = []
        total = 0
        for series, sop in self._images(client, ref, max_files):
            retrieve = partial(client.retrieve_instance, ref.study_instance_uid, series, sop)
            data = _file_bytes(self._call(ref, retrieve))
            total += len(data)
            if total > max_bytes:
                raise PayloadTooLarge(
                    f"the instances of {ref.describe()} exceed the {max_bytes}-byte upload limit"
                )
            out.append(Fetched(sop, data))
        return out

    def _images(
        self, client: DICOMwebClient, ref: DicomwebRef, max_files: int
    ) -> list[tuple[str, str]]:
        """(series, instance) UIDs of the instances to classify: a named instance, else the
        study's (or series') instances but reports, presentation states and documents (the
        SRs this service stored there among them)."""
        sop_filter = {"SOPInstanceUID": ref.sop_instance_uid} if ref.sop_instance_uid else None
        listed = self._call(
            ref,
            lambda: client.search_for_instances(
                study_instance_uid=ref.study_instance_uid,
                series_instance_uid=ref.series_instance_uid,
                search_filters=sop_filter,
                fields=[SOP_CLASS],
                limit=LIST_LIMIT,
            ),
        )
        found = [(_value(e, SERIES), _value(e, INSTANCE), _value(e, SOP_CLASS)) for e in listed]
        if any(not series or not sop for series, sop, _ in found):
            raise BadGateway("the DICOMweb server listed an instance without its UIDs")
        images = [
            (series, sop)
            for series, sop, sop_class in found
            if ref.sop_instance_uid or not sop_class.startswith(NOT_IMAGES)
        ]
        if not images:
            raise NotFound(f"the DICOMweb server holds no image instance of {ref.describe()}")
        if len(images) > max_files or len(listed) >= LIST_LIMIT:
            raise PayloadTooLarge(
                f"{ref.describe()} holds more than {max_files} instances, the most one request"
                " may classify: name a series or an instance"
            )
        return images

    def store(self, sr: Dataset, maps: Sequence[Dataset] = ()) -> None:
        """Store a report, and its attention maps, with one STOW-RS request in its study."""
        client = self._client()
        study = str(sr.StudyInstanceUID)
        where = DicomwebRef(study_instance_uid=study)
        sent = [sr, *maps]
        self._call(where, lambda: client.store_instances(sent, study_instance_uid=study))

    def _client(self) -> DICOMwebClient:
        from dicomweb_client import DICOMwebClient
        from dicomweb_client.session_utils import create_session

        session = create_session()
        session.auth = self.config.basic_auth()
        client = DICOMwebClient(
            self.config.url,
            session=session,
            headers=self.config.headers(),
            timeout=self.config.timeout_s,
        )
        # Its retries wait 1, 2, 4, 8 s between tries: a caller waits on this request.
        client.set_http_retry_params(retry=False)
        return client

    def _call(self, ref: DicomwebRef, call: Callable[[], T]) -> T:
        with _problems(ref, self.config.timeout_s):
            return call()


def before_deadline(work: Callable[[], T], deadline_s: float, late: str) -> T:
    """`work()`'s result, or GatewayTimeout(`late`) once `deadline_s` have passed.

    requests bounds each socket read, not a whole transfer: a server that sends a byte every
    few seconds never trips it. So the work runs in a daemon thread that the caller stops
    waiting for at the deadline; the abandoned transfer ends at the server's close or at its
    next read timeout, and nothing of it is used.
    """
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the waiting caller, re-raised there
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="dicomweb-fetch", daemon=True)
    thread.start()
    thread.join(deadline_s)
    if not outcome:
        raise GatewayTimeout(late)
    done, value = outcome[0]
    if not done:
        raise value
    return value  # type: ignore[no-any-return]


@contextmanager
def _problems(ref: DicomwebRef, timeout_s: float) -> Iterator[None]:
    """Failures of the DICOMweb server as the caller's problems (never its credentials)."""
    import requests

    try:
        yield
    except ServiceError:
        raise
    except requests.Timeout:
        raise GatewayTimeout(
            f"the DICOMweb server did not answer within {timeout_s:g} s ({ref.describe()})"
        ) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 404:
            raise NotFound(f"the DICOMweb server has no {ref.describe()}") from None
        raise BadGateway(f"the DICOMweb server answered {status} for {ref.describe()}") from None
    except requests.RequestException:
        raise BadGateway("the DICOMweb server cannot be reached") from None
    except (ValueError, OSError) as exc:  # a malformed multipart or DICOM answer
        raise BadGateway(
            f"the DICOMweb server sent an unreadable answer ({type(exc).__name__})"
        ) from None


def _value(entry: dict[str, Any], tag: str) -> str:
    """A QIDO-RS JSON attribute's first value, as a string ("" when absent)."""
    values = entry.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _file_bytes(ds: Dataset) -> bytes:
    """A retrieved instance as a DICOM file, as an upload would hold it."""
    from pydicom.filewriter import dcmwrite

    out = io.BytesIO()
    try:
        dcmwrite(out, ds, enforce_file_format=True)
    except (ValueError, AttributeError, TypeError) as exc:
        raise BadGateway(f"a retrieved instance cannot be written ({type(exc).__name__})") from None
    return out.getvalue()


def require_ref(body: Any) -> DicomwebRef:
    """The `dicomweb` member of a predict body, validated (422 naming the bad fields)."""
    from pydantic import ValidationError

    from service.errors import InvalidRequest

    try:
        return DicomwebRef.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest.from_pydantic(exc, location="body/dicomweb") from None


def not_configured() -> Unprocessable:
    return Unprocessable(
        "this service fetches no scans by reference: SCANTUNE_DICOMWEB_URL is not set"
    )
