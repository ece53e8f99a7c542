"""The one-pass multipart reader agrees with Werkzeug's parser, or hands the body to it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3 import encode_multipart_formdata
from werkzeug.test import EnvironBuilder

from service.inference.uploads import FilePart, InMemoryRequest, read_uploads, split_multipart

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def request_for(body: bytes, content_type: str) -> InMemoryRequest:
    environ = EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ()
    return InMemoryRequest(environ)


def werkzeug_parts(body: bytes, content_type: str) -> list[FilePart]:
    request = request_for(body, content_type)
    return [
        FilePart(field, f.filename or "", f.mimetype, f.read())
        for field, f in request.files.items(multi=True)
    ]


def encoded(fields: list[tuple[str, tuple[str, bytes, str] | str]]) -> tuple[bytes, str]:
    """A body as urllib3 (and so requests) encodes it."""
    return encode_multipart_formdata(fields, boundary="7d3a9f0c1e2b4a5d8c6f")


CLIENT_BODIES = {
    "one file": encoded([("file", ("scan.png", PNG, "image/png"))]),
    "three files": encoded([("file", (f"s{i}.png", PNG[i:], "image/png")) for i in range(3)]),
    "utf-8 file name": encoded([("file", ("Röntgen ü.png", PNG, "image/png"))]),
    "no content type": encoded([("file", ("scan.png", PNG, ""))]),
    "empty file": encoded([("file", ("empty.png", b"", "image/png"))]),
    "field beside the file": encoded([("note", "hello"), ("file", ("a.png", PNG, "image/png"))]),
    "other file field": encoded([("other", ("x.png", PNG, "image/png"))]),
    "content holds a near-boundary": encoded(
        [("file", ("a.png", PNG + b"\r\n--7d3a9f0c1e2b4a5d8c6" + PNG, "image/png"))]
    ),
}


@pytest.mark.parametrize("case", sorted(CLIENT_BODIES))
def test_client_bodies_are_split_in_one_pass_exactly_as_werkzeug_parses_them(case: str) -> None:
    body, content_type = CLIENT_BODIES[case]
    fast = split_multipart(request_for(body, content_type))
    assert fast is not None
    assert fast == werkzeug_parts(body, content_type)


B = "b0undary"
CT = f"multipart/form-data; boundary={B}"
OPEN = b"--" + B.encode()
CLOSE = b"\r\n--" + B.encode() + b"--\r\n"
PART = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
UNUSUAL_BODIES = {
    "preamble": b"preamble\r\n" + OPEN + b"\r\n" + PART + PNG + CLOSE,
    "bare LF line ends": (
        OPEN + b"\n" + PART.replace(b"\r\n", b"\n") + PNG + CLOSE.replace(b"\r\n", b"\n")
    ),
    "folded header": (
        OPEN
        + b'\r\nContent-Disposition: form-data;\r\n name="file"; filename="a.png"\r\n\r\n'
        + PNG
        + CLOSE
    ),
    "padding after the delimiter": OPEN + b"  \r\n" + PART + PNG + CLOSE,
    "no closing delimiter": OPEN + b"\r\n" + PART + PNG,
    "no disposition": OPEN + b"\r\nContent-Type: image/png\r\n\r\n" + PNG + CLOSE,
    "latin-1 header": (
        OPEN
        + b'\r\nContent-Disposition: form-data; name="file"; filename="\xe9.png"\r\n\r\n'
        + PNG
        + CLOSE
    ),
}


@pytest.mark.parametrize("case", sorted(UNUSUAL_BODIES))
def test_unusual_bodies_go_to_werkzeug(case: str) -> None:
    body = UNUSUAL_BODIES[case]
    assert split_multipart(request_for(body, CT)) is None
    werkzeug = werkzeug_parts(body, CT)  # still parsable from the cached body after the attempt
    request = request_for(body, CT)
    split_multipart(request)
    assert werkzeug_parts_from(request) == werkzeug


def werkzeug_parts_from(request: InMemoryRequest) -> list[FilePart]:
    return [
        FilePart(field, f.filename or "", f.mimetype, f.read())
        for field, f in request.files.items(multi=True)
    ]


def test_read_uploads_takes_only_the_file_field_and_names_parts() -> None:
    body, content_type = encoded(
        [("note", "x"), ("file", ("a.png", PNG, "image/png")), ("file", ("", PNG, "image/png"))]
    )
    uploads = read_uploads(request_for(body, content_type), max_files=8)
    assert [(u.name, u.data) for u in uploads] == [("a.png", PNG), ("file[1]", PNG)]


@settings(max_examples=150, deadline=None)
@given(
    files=st.lists(
        st.tuples(
            st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
            st.binary(max_size=300).map(lambda b: b.replace(b"Z", b"\r\n--bnd")),
            st.sampled_from(["image/png", "application/dicom", ""]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_client_encoded_body_splits_as_werkzeug_parses_it(
    files: list[tuple[str, bytes, str]],
) -> None:
    body, content_type = encode_multipart_formdata(
        [("file", (name or "f", data, mime)) for name, data, mime in files], boundary="bnd"
    )
    fast = split_multipart(request_for(body, content_type))
    werkzeug = werkzeug_parts(body, content_type)
    assert fast is None or fast == werkzeug
    if not any(b"\r\n--bnd" in data for _, data, _ in files):
        assert fast == werkzeug
