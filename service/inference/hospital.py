"""The HTTP side of hospital formats on predict: Accept, the `dicomweb` body, the queries.

The work is in `service.hospital.answers`; this reads what it needs from the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Request
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_options_header

from models.card import ModelCard
from service.config import InferenceSettings
from service.errors import BadRequest, NotAcceptable
from service.hospital.answers import (
    JSON_MEDIA_TYPE,
    MEDIA_TYPES,
    HospitalRequest,
    pacs,
    report_settings,
    scans_of,
)
from service.hospital.dicomweb import Pacs, not_configured, require_ref
from service.hospital.multipart import DICOM_TYPE, EXPLICIT_LITTLE, MULTIPART_DICOM
from service.hospital.results import ModelIdentity
from service.inference.uploads import Upload, counted, from_json, json_or_none, read_uploads

if TYPE_CHECKING:
    from service.inference.loaded import LoadedModel
    from service.inference.queries import PredictQuery


def answer_type(request: Request) -> str:
    """The media type the answer is asked in: JSON, unless Accept prefers an SR, FHIR, HL7 or
    DICOM files in a multipart body (with or without a transfer syntax: `_as_listed`). Any
    other Accept is answered JSON, but for DICOM files in a transfer syntax not made here
    from a client that takes nothing else: a DICOMweb client could not read JSON (406)."""
    accept = MIMEAccept([(_as_listed(value), q) for value, q in request.accept_mimetypes])
    found = accept.best_match(MEDIA_TYPES)
    if found is not None:
        return found
    if accept and not accept[JSON_MEDIA_TYPE] and any(map(_other_syntax, accept.values())):
        raise NotAcceptable(
            f"DICOM files are answered in explicit VR little endian ({EXPLICIT_LITTLE}) only:"
            f" accept {MULTIPART_DICOM} with transfer-syntax={EXPLICIT_LITTLE} or *, or"
            f" {JSON_MEDIA_TYPE}"
        )
    return JSON_MEDIA_TYPE


def _other_syntax(value: str) -> bool:
    mimetype, params = parse_options_header(value)
    return mimetype == "multipart/related" and params.get("type") == DICOM_TYPE


def _as_listed(value: str) -> str:
    """`multipart/related` of DICOM files as `MEDIA_TYPES` lists it, also with the transfer
    syntax DICOMweb clients add (`*`, or the explicit VR little endian the files are in):
    werkzeug compares parameters as written. Any other value as given."""
    mimetype, params = parse_options_header(value)
    dicom = mimetype == "multipart/related" and params.get("type") == DICOM_TYPE
    syntax = params.get("transfer-syntax", "*") in ("*", EXPLICIT_LITTLE)
    if dicom and syntax and set(params) <= {"type", "transfer-syntax"}:
        return MULTIPART_DICOM
    return value


def read_scans(request: Request, settings: InferenceSettings) -> list[Upload]:
    """The request's scans: uploaded, or fetched from the PACS for a `{"dicomweb": ...}` body."""
    if request.mimetype != JSON_MEDIA_TYPE:
        return read_uploads(request, settings.max_files)
    body = json_or_none(request.get_data(cache=True))
    if not (isinstance(body, dict) and "dicomweb" in body):
        return counted(from_json(body), settings.max_files)  # as read_uploads, parsed once
    if len(body) > 1:
        raise BadRequest('give "dicomweb" or "instances", not both')
    ref = require_ref(body["dicomweb"])
    server = pacs(settings)
    if server is None:
        raise not_configured()
    limit = int(settings.max_upload_mb * 2**20)
    fetched = server.fetch(ref, max_files=settings.max_files, max_bytes=limit)
    return [Upload(f.name, f.data) for f in fetched]


def store_to(settings: InferenceSettings, store: bool) -> Pacs | None:
    """Where `?store=true` stores the SR: the configured PACS (422 when there is none)."""
    if not store:
        return None
    server = pacs(settings)
    if server is None:
        raise not_configured()
    return server


def hospital_request(
    request: Request,
    settings: InferenceSettings,
    uploads: list[Upload],
    card: ModelCard,
    query: PredictQuery,
) -> HospitalRequest:
    """What the request asks of hospital formats, checked before the model runs."""
    return HospitalRequest.check(
        scans_of(uploads),
        card,
        media_type=answer_type(request),
        store=store_to(settings, query.store),
        allow_other_modality=query.allow_other_modality,
    )


def hospital_answer(
    asked: HospitalRequest, result: dict[str, Any], model: LoadedModel, settings: InferenceSettings
) -> tuple[bytes, str] | None:
    """The SR or Bundle to answer with (None: JSON), the SR stored when asked."""
    identity = ModelIdentity.from_card(model.card, model.version)
    return asked.answer(result, identity, report_settings(settings))
