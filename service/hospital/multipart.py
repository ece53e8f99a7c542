"""A `multipart/related` body of DICOM files, as DICOMweb answers several instances (PS3.18
8.7.4: each part `Content-Type: application/dicom`, the body's `type` parameter the same).

Written by hand: the standard library's `email` package transfer-encodes binary parts (base64)
unless told otherwise part by part, and the maintained multipart encoders (urllib3,
requests-toolbelt) write `multipart/form-data` only; what DICOMweb asks for is a few lines.
Read back (`dicom_parts`, for the CLI and the Python client) with the `email` parser.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

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


def dicom_parts(body: bytes, content_type: str) -> list[bytes]:
    """The files of a multipart/related answer (`multipart_dicom`'s, or any DICOMweb server's),
    in order; read with the standard library's parser, which reads what it does not write."""
    from email.parser import BytesParser
    from email.policy import HTTP

    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if message.get_content_type() != "multipart/related":
        raise ValueError(f"not a multipart/related answer: {message.get_content_type()}")
    files = []
    for part in message.iter_parts():
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            raise ValueError("a part of the answer is not a file")
        files.append(data)
    return files
