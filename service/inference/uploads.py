"""Reading scans out of a request: multipart files, JSON base64 or a raw body — in memory only.

Scans never touch the disk: `InMemoryRequest` keeps every multipart file in a BytesIO, where
Werkzeug would otherwise spool uploads over 500 kB to a temporary file.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import IO, Any

from flask import Request

from service.errors import BadRequest, UnsupportedMediaType

FILE_FIELD = "file"
SCAN_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/jpg", "application/dicom", "application/octet-stream"}
)
"""Content types accepted for a scan (also none at all); the bytes decide the real format."""


class InMemoryRequest(Request):
    """A Flask request whose uploaded files stay in memory."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


@dataclass(frozen=True)
class Upload:
    """One scan's bytes and the name errors and results refer to it by."""

    name: str
    data: bytes


def read_uploads(request: Request, max_files: int) -> list[Upload]:
    """The scans in a predict request, by its content type."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        uploads = _from_multipart(request)
    elif mimetype == "application/json":
        uploads = _from_json(request.get_json(silent=True))
    elif mimetype in SCAN_TYPES:
        uploads = [Upload("body", request.get_data())]
    else:
        raise UnsupportedMediaType(
            f"send scans as multipart/form-data (field '{FILE_FIELD}'), application/json"
            f' ({{"instances": [{{"b64": ...}}]}}) or a raw image/png, image/jpeg or'
            f" application/dicom body, not {mimetype or 'no content type'}"
        )
    if not uploads:
        raise BadRequest("the request holds no scan")
    if len(uploads) > max_files:
        raise BadRequest(f"{len(uploads)} scans in one request; at most {max_files} are accepted")
    return uploads


def _from_multipart(request: Request) -> list[Upload]:
    files = request.files.getlist(FILE_FIELD)
    if not files:
        raise BadRequest(f"multipart request without a '{FILE_FIELD}' field")
    uploads = []
    for i, part in enumerate(files):
        name = part.filename or f"{FILE_FIELD}[{i}]"
        if part.mimetype and part.mimetype not in SCAN_TYPES:
            raise UnsupportedMediaType(
                f"{name}: content type {part.mimetype} is not a scan; send PNG, JPEG or DICOM"
            )
        uploads.append(Upload(name, part.read()))
    return uploads


def _from_json(body: Any) -> list[Upload]:
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list):
        raise BadRequest('JSON body must be {"instances": [{"b64": "<base64 scan>"}, ...]}')
    uploads = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise BadRequest(f'instances[{i}] must be an object with a "b64" string')
        name = instance.get("name")
        name = name if isinstance(name, str) and name else f"instances[{i}]"
        uploads.append(Upload(name, b64decode(instance["b64"], name)))
    return uploads


def b64decode(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name}: not valid base64") from None
