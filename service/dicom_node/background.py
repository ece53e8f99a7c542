"""A daemon thread that works until the node stops: the order fetcher's and the outcome
reporter's, each its own so that a slow PACS or training service never holds up the queue
worker's classifications and deliveries."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("scantune.dicom")


class Background:
    """Calls `step` in a thread of its own until `stop`, waiting `poll_s` after a round that
    did nothing; a round that fails (the database away for a moment) is logged and the
    thread carries on."""

    name = "background"
    poll_s = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> bool:
        """One round; whether it did anything (then the next comes at once)."""
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception as exc:
                log.error("%s step failed: %s", self.name, type(exc).__name__)
                busy = False
            if not busy:
                self._stop.wait(self.poll_s)
