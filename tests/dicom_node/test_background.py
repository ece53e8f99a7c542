"""The node's background threads (order fetcher, outcome reporter): each runs in a thread of
its own; a round that fails is logged and the thread goes on; stop ends it."""

from __future__ import annotations

import logging
import threading

import pytest

from service.dicom_node.background import Background
from tests.dicom_node.parts import wait_until


class Counting(Background):
    name = "counting"
    poll_s = 0.05  # after an idle or failed round

    def __init__(self) -> None:
        super().__init__()
        self.rounds = 0
        self.thread_names: set[str] = set()

    def step(self) -> bool:
        self.rounds += 1
        self.thread_names.add(threading.current_thread().name)
        if self.rounds == 2:
            raise ConnectionError("the database away for a moment")
        return False


def test_a_failed_round_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = Counting()
    with caplog.at_level(logging.ERROR, logger="scantune.dicom"):
        loop.start()
        wait_until(lambda: loop.rounds >= 4, 5, "rounds after the failure")
        loop.stop()
    assert loop.thread_names == {"counting"}  # never the caller's thread
    assert "counting step failed: ConnectionError" in caplog.text
    assert loop._thread is not None and not loop._thread.is_alive()
