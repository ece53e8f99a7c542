"""The node's C-MOVEs under way: one is cancelled the moment it is asked to stop
(`CancelWatch`), and what reaches the node of each is counted as it comes (`Arrivals`).

A source need not send pending answers while it moves a study (they are optional), so the
C-CANCEL cannot wait for one: a watch sends it from its own thread while `send_c_move` waits for
the next answer (pynetdicom queues it to the association like any message). A source that
ignores it, or never answers, gets a grace period for its final answer; then the association is
aborted. Its final answer, with the counts of what it sent, never comes: what reached the node
of that C-MOVE (the C-STORE sub-operations carry its Message ID) is what the retrieval reports.
"""

from __future__ import annotations

import threading
from typing import Any

POLL_S = 0.2  # how often a watch looks whether its C-MOVE has ended before any cancel


class CancelWatch:
    """While one C-MOVE runs (a context manager): once `cancel` is set, its C-CANCEL at once;
    if the source has not given its final answer `grace_s` later, an A-ABORT. Without `cancel`,
    nothing. `sent` and `aborted` say what it did."""

    def __init__(
        self,
        assoc: Any,
        msg_id: int,
        model: Any,
        cancel: threading.Event | None,
        grace_s: float,
    ) -> None:
        self.assoc, self.msg_id, self.model = assoc, msg_id, model
        self.cancel, self.grace_s = cancel, grace_s
        self.sent = self.aborted = False
        self._over = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CancelWatch:
        if self.cancel is not None:
            self._thread = threading.Thread(
                target=self._watch, args=(self.cancel,), name="dicom-move-cancel", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._over.set()
        # Joined once it has sent the C-CANCEL (it may be aborting: the association must be
        # left alone till then), not before: that would hold each C-MOVE up to POLL_S, and
        # it ends on its own, sending nothing once the C-MOVE is over.
        if self.sent and self._thread is not None:
            self._thread.join()

    def _watch(self, cancel: threading.Event) -> None:
        while not cancel.wait(POLL_S):
            if self._over.is_set():
                return
        if self._over.is_set():
            return
        self.sent = True  # first: the source may answer the C-CANCEL before this runs on
        try:
            self.assoc.send_c_cancel(self.msg_id, query_model=self.model)
        except RuntimeError:  # the association ended meanwhile, and the C-MOVE with it
            self.sent = False
            return
        if self._over.wait(self.grace_s):
            return
        self.aborted = True  # before the abort: the C-MOVE's loop must know it was ours
        self.assoc.abort()
        # pynetdicom's wait for the next answer does not notice an abort of our own before
        # its DIMSE timeout (pydicom/pynetdicom#778); it ends at an empty message, which is
        # what pynetdicom itself queues when an association is aborted or its connection lost.
        self.assoc.dimse.msg_queue.put((None, None))


class Arrivals:
    """What reaches the node of each C-MOVE the node has under way: the C-STORE sub-operations
    it answered, told apart by their Move Originator Message ID and their study (where a
    source does not tag its sub-operations, nothing is counted). Thread-safe: the Storage SCP
    notes them on its association threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._moves: dict[tuple[int, str], list[int]] = {}

    def expect(self, msg_id: int, study_uid: str) -> None:
        with self._lock:
            self._moves[(msg_id, study_uid)] = [0, 0]

    def note(self, msg_id: int | None, study_uid: str, stored: bool) -> None:
        """One C-STORE the node answered: `stored` (Success), or refused. Those of no C-MOVE
        the node expects are not counted."""
        if msg_id is None:
            return
        with self._lock:
            counts = self._moves.get((msg_id, study_uid))
            if counts is not None:
                counts[0 if stored else 1] += 1

    def take(self, msg_id: int, study_uid: str) -> tuple[int, int, int]:
        """(completed, failed, warning) of the C-MOVE so far, as its source would count them
        (the node answers no warning); it is no longer counted."""
        with self._lock:
            completed, failed = self._moves.pop((msg_id, study_uid), [0, 0])
        return completed, failed, 0
