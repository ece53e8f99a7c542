"""MLLP framing against raw loopback peers that misbehave the ways real ones do: an answer in
pieces, a peer that hangs up, one that never answers, one that does not frame its answer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from service.dicom_node.mllp import END, START, MllpError, exchange

Peer = Callable[[socket.socket, bytes], None]


@pytest.fixture
def peer() -> Iterator[Callable[[Peer], int]]:
    """A one-connection TCP server on a free port running `behave(conn, framed_message)`."""
    servers: list[socket.socket] = []

    def start(behave: Peer) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                data = b""
                while END not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                behave(conn, data)

        threading.Thread(target=serve, daemon=True).start()
        return int(server.getsockname()[1])

    yield start
    for server in servers:
        server.close()


def test_an_answer_in_pieces_is_put_together(peer: Callable[[Peer], int]) -> None:
    seen: list[bytes] = []

    def in_pieces(conn: socket.socket, data: bytes) -> None:
        seen.append(data)
        for piece in (START + b"MSH|^~\\&|A\rMS", b"A|AA|C1\r", END):
            conn.sendall(piece)
            time.sleep(0.05)

    answer = exchange("127.0.0.1", peer(in_pieces), b"MSH|x\r", timeout_s=5)
    assert answer == b"MSH|^~\\&|A\rMSA|AA|C1\r"
    assert seen == [START + b"MSH|x\r" + END]  # framed as HL7 appendix C says


@pytest.mark.parametrize(
    ("behave", "says"),
    [
        (lambda conn, data: None, "closed before a whole answer"),
        (lambda conn, data: conn.sendall(b"MSA|AA|C1\r" + END), "not framed"),
        (lambda conn, data: time.sleep(2), "no answer in time"),
        (lambda conn, data: (conn.sendall(START + b"MSA|AA"), time.sleep(2)), "no answer in"),
    ],
)
def test_a_peer_that_misbehaves_is_an_error_in_time(
    peer: Callable[[Peer], int], behave: Peer, says: str
) -> None:
    started = time.monotonic()
    with pytest.raises(MllpError, match=says):
        exchange("127.0.0.1", peer(behave), b"MSH|x\r", timeout_s=0.5)
    assert time.monotonic() - started < 1.5


def test_nobody_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(OSError):
            exchange("127.0.0.1", port, b"MSH|x\r", timeout_s=1)
