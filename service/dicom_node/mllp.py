"""MLLP, HL7 v2's framing over TCP (HL7 v2.5.1 appendix C): a message goes as <VT> message
<FS><CR>, and the answer (the ACK) comes back framed the same way.

By hand because no maintained client fits: python-hl7's MLLPClient reads the answer with one
`recv` (a partial read is taken for the whole answer) and has no timeout or TLS; hl7apy has a
server only. One message per connection, which every receiver accepts.
"""

from __future__ import annotations

import socket
import ssl
import time

START, END = b"\x0b", b"\x1c\r"
MAX_ANSWER = 1 << 20  # an ACK is a few hundred bytes; a megabyte is a misbehaving peer


class MllpError(Exception):
    """No framed answer (its text names no message content)."""


def exchange(
    host: str, port: int, message: bytes, timeout_s: float, tls: ssl.SSLContext | None = None
) -> bytes:
    """Send one framed message and return the framed answer's content; the whole exchange
    ends within `timeout_s` (OSError for the connection, MllpError for the answer)."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        conn = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        with conn:
            conn.sendall(START + message + END)
            return _answer(conn, deadline)


def _answer(conn: socket.socket, deadline: float) -> bytes:
    data = b""
    while END not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MllpError("no answer in time")
        conn.settimeout(left)
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            raise MllpError("no answer in time") from None
        if not chunk:
            raise MllpError("connection closed before a whole answer")
        data += chunk
        if len(data) > MAX_ANSWER:
            raise MllpError("answer too long")
    start = data.find(START)
    if start < 0:
        raise MllpError("answer not framed")
    return data[start + 1 : data.index(END)]
