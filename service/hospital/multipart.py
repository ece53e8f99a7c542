"""A `multipart/related` body of DICOM files, as DICOMweb answers several instances (PS3.18
8.7.4: each part `Content-Type: application/dicom`, the body's `type` parameter the same).

Written by hand: the standard library's `email` package transfer-encodes binary parts (base64)
unless told otherwise part by part, and the maintained multipart encoders (urllib3,
requests-toolbelt) write `multipart/form-data` only; what DICOMweb asks for is a few lines.
Read (`dicom_parts`: a STOW-RS body at the DICOM node, the answer in the CLI and the Python
client) with the `email` parser.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

DICOM_TYPE = "application/dicom"
MULTIPART_DICOM = f'multipart/related; type="{DICOM_TYPE}"'
"""The media type a client asks for (Accept) to get the DICOM files of an answer."""
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
"""The transfer syntax of the files written (explicit VR little endian)."""


def multipart_dicom(files: Sequence[bytes]) -> tuple[bytes, str]:
    """The body holding `files` (DICOM Part 10 bytes), in order, and its Content-Type."""
    boundary = uuid.uuid4().hex
    while any(boundary.encode() in f for f in files):  # a part may not contain the boundary
        boundary = uuid.uuid4().hex
    parts = [
        b"--%s\r\nContent-Type: %s\r\n\r\n%s\r\n" % (boundary.encode(), DICOM_TYPE.encode(), f)
        for f in files
    ]
    body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
    return body, f"{MULTIPART_DICOM}; boundary={boundary}"


def dicom_parts(content_type: str, body: bytes) -> list[bytes]:
    """The application/dicom parts of a multipart/related body, or a 4xx saying what is
    wrong with it (a STOW-RS request's; to a client reading an answer, a broken answer)."""
    from service.errors import BadRequest, UnsupportedMediaType  # the CLI's parser stays light

    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace") + body
    )
    if message.get_content_type() != "multipart/related":
        raise UnsupportedMediaType(
            'send multipart/related; type="application/dicom", one DICOM file per part'
        )
    kind = (message.get_param("type") or "application/dicom").lower()  # type: ignore[union-attr]
    if kind != "application/dicom":
        raise UnsupportedMediaType(
            f"parts of type {kind[:40]!r}: this node takes application/dicom"
        )
    parts = [p for p in message.iter_parts() if isinstance(p, Message)]
    if not parts:
        raise BadRequest("the multipart body holds no part (check the boundary)")
    out = []
    for i, part in enumerate(parts):
        if part.get_content_type() != "application/dicom":
            raise UnsupportedMediaType(f"part {i + 1} is {part.get_content_type()}, not DICOM")
        payload = part.get_payload(decode=True)
        out.append(payload if isinstance(payload, bytes) else b"")
    return out
