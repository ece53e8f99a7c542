"""Reading scans out of a request: multipart files, JSON base64 or a raw body — in memory only.

Scans never touch the disk: `InMemoryRequest` keeps every multipart file in a BytesIO, where
Werkzeug would otherwise spool uploads over 500 kB to a temporary file.

A well-formed multipart body (what HTTP client libraries send) is split in one pass over its
bytes: Werkzeug's streaming parser takes about 0.6 ms for a 40 kB scan, a third of the
service's own cost per request. Anything unusual (a preamble, bare LF line ends, a malformed
header) goes to Werkzeug's parser, which yields the same parts.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import IO, Any

from flask import Request
from werkzeug.http import parse_options_header
from werkzeug.wsgi import get_input_stream

from service.encoding import parse_json
from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

FILE_FIELD = "file"
SCAN_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/jpg", "application/dicom", "application/octet-stream"}
)
"""Content types accepted for a scan (also none at all); the bytes decide the real format."""


class InMemoryRequest(Request):
    """A Flask request whose uploaded files stay in memory, and whose body may arrive gzip- or
    deflate-encoded (`Content-Encoding`, as tritonclient's request compression sends it)."""

    @cached_property
    def stream(self) -> IO[bytes]:
        raw = get_input_stream(self.environ, max_content_length=self.max_content_length)
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding == "identity":
            return raw
        limit = self.max_content_length
        if encoding not in ("gzip", "deflate") or limit is None:
            raise UnsupportedMediaType(
                f"Content-Encoding {encoding[:20]!r} is not supported; send gzip, deflate or none"
            )
        return io.BytesIO(inflate(raw, encoding, limit))

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


def inflate(stream: IO[bytes], encoding: str, limit: int) -> bytes:
    """A gzip or deflate (zlib) body, inflated to at most `limit` bytes: past it, a 413, so a
    few kB that inflate to gigabytes never reach memory."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    out = bytearray()
    try:
        while chunk := stream.read(64 * 1024):
            while chunk and not inflater.eof:
                out += inflater.decompress(chunk, limit + 1 - len(out))
                if len(out) > limit:
                    raise PayloadTooLarge(
                        f"the {encoding} body inflates to over the {limit}-byte upload limit"
                    )
                chunk = inflater.unconsumed_tail
    except zlib.error:
        raise BadRequest(f"the body is not valid {encoding} data") from None
    if not inflater.eof:
        raise BadRequest(f"the {encoding} body is cut short")
    return bytes(out)


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
        uploads = from_json(json_or_none(request.get_data(cache=True)))
    elif mimetype in SCAN_TYPES:
        uploads = [Upload("body", request.get_data())]
    else:
        raise UnsupportedMediaType(
            f"send scans as multipart/form-data (field '{FILE_FIELD}'), application/json"
            f' ({{"instances": [{{"b64": ...}}]}}) or a raw image/png, image/jpeg or'
            f" application/dicom body, not {mimetype or 'no content type'}"
        )
    return counted(uploads, max_files)


def counted(uploads: list[Upload], max_files: int) -> list[Upload]:
    """`uploads`, or a 400 when there are none or more than `max_files`."""
    if not uploads:
        raise BadRequest("the request holds no scan")
    if len(uploads) > max_files:
        raise BadRequest(f"{len(uploads)} scans in one request; at most {max_files} are accepted")
    return uploads


@dataclass(frozen=True)
class FilePart:
    """A file part of a multipart body: its field, file name, content type and bytes."""

    field: str
    filename: str
    mimetype: str
    data: bytes


def _from_multipart(request: Request) -> list[Upload]:
    parts = split_multipart(request)
    if parts is None:
        parts = [
            FilePart(field, f.filename or "", f.mimetype, f.read())
            for field, f in request.files.items(multi=True)
        ]
    return file_uploads(parts)


def file_uploads(parts: list[FilePart]) -> list[Upload]:
    """The scans among a multipart body's file parts: those of the field `file`."""
    files = [part for part in parts if part.field == FILE_FIELD]
    if not files:
        raise BadRequest(f"multipart request without a '{FILE_FIELD}' field")
    uploads = []
    for i, part in enumerate(files):
        name = part.filename or f"{FILE_FIELD}[{i}]"
        if part.mimetype and part.mimetype not in SCAN_TYPES:
            raise UnsupportedMediaType(
                f"{name}: content type {part.mimetype} is not a scan; send PNG, JPEG or DICOM"
            )
        uploads.append(Upload(name, part.data))
    return uploads


def split_multipart(request: Request) -> list[FilePart] | None:
    """The file parts of a plain multipart body, found in one pass; None when the body is
    anything but plain (Werkzeug's parser then reads it from the cached bytes).

    Plain: the body opens with the delimiter, every part has CRLF header lines ending in a
    blank line, every delimiter is followed by CRLF or the closing "--". Form fields (parts
    without a filename) are skipped, as Werkzeug files them under `form`, not `files`.
    """
    boundary = request.mimetype_params.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        return None
    body = request.get_data(cache=True)  # size-limited by the stream (413 past the limit)
    return split_plain(body, boundary)


def split_plain(body: bytes, boundary: str) -> list[FilePart] | None:
    """The file parts of `body` when it is a plain multipart body (see `split_multipart`)."""
    try:
        return _split(body, b"--" + boundary.encode("latin-1"))
    except _NotPlain:
        return None


class _NotPlain(Exception):
    """The body needs the general parser."""


def _split(body: bytes, delimiter: bytes) -> list[FilePart]:
    separator = b"\r\n" + delimiter
    if not body.startswith(delimiter + b"\r\n"):
        raise _NotPlain
    parts: list[FilePart] = []
    start = len(delimiter) + 2
    while True:
        end = body.find(separator, start)
        head_end = body.find(b"\r\n\r\n", start, end)
        if end < 0 or head_end < 0:
            raise _NotPlain
        part = _file_part(body[start:head_end], body[head_end + 4 : end])
        if part is not None:
            parts.append(part)
        after = end + len(separator)
        if body.startswith(b"--", after):
            return parts  # the closing delimiter; an epilogue after it is ignored
        if not body.startswith(b"\r\n", after):
            raise _NotPlain
        start = after + 2


def _file_part(head: bytes, data: bytes) -> FilePart | None:
    """The part with this header block, or None for a form field."""
    headers: dict[str, str] = {}
    try:
        lines = head.decode("utf-8").split("\r\n") if head else []
    except UnicodeDecodeError:
        raise _NotPlain from None
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise _NotPlain
        headers[name.lower()] = value.strip()
    disposition, options = parse_options_header(headers.get("content-disposition"))
    if disposition != "form-data" or "name" not in options:
        raise _NotPlain
    if "filename" not in options:
        return None
    mimetype = parse_options_header(headers.get("content-type"))[0]
    return FilePart(options["name"], options["filename"], mimetype, data)


def json_or_none(data: bytes) -> Any:
    """The body's JSON document (UTF-8, -16 or -32), or None when it is not one."""
    try:
        return parse_json(data)
    except ValueError:
        return None


def from_json(body: Any) -> list[Upload]:
    """The scans of a JSON body: `{"instances": [{"b64": ..., "name": ...}, ...]}`."""
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


_DATA_URI = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[^;,]*)*;base64,", re.ASCII)


def b64decode(text: str, name: str) -> bytes:
    """Standard base64, as a browser's data: URI gives it too, and wrapped in lines as the
    `base64` tool writes it: line breaks and spaces are dropped, any other stray character is
    a 400."""
    if text.startswith("data:") and (prefix := _DATA_URI.match(text)):
        text = text[prefix.end() :]
    try:
        return base64.b64decode(text.encode("ascii").translate(None, b" \t\r\n"), validate=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise BadRequest(f"{name}: not valid base64") from None
