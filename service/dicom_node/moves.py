"""The node's C-MOVEs under way: each is watched while it runs (`MoveWatch`: cancelled the
moment it is asked to stop, cut off once its source has gone silent), and what reaches the node
of each is counted as it comes (`Arrivals`).

A source need not send pending answers while it moves a study (they are optional), so neither
the C-CANCEL nor the judgement that a source is gone can wait for one. A watch sends the
C-CANCEL from its own thread while `send_c_move` waits for the next answer (pynetdicom queues it
to the association like any message); a source that ignores it, or never answers, gets a grace
period for its final answer, then the association is aborted. Its final answer, with the counts
of what it sent, never comes: what reached the node of that C-MOVE (the C-STORE
sub-operations carry its Message ID) is what the retrieval reports. Those arrivals are signs of
life too: a source that sends a large study without a word until its final answer is alive as
long as its instances keep coming; it is cut off only when neither an answer nor an instance
has come for the retrieval's timeout (a source whose sub-operations do not carry the Message
ID is judged by its answers alone).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.2  # how often a watch looks for a cancel, an arrival, or its C-MOVE's end


class MoveWatch:
    """While one C-MOVE runs (a context manager), from a thread of its own: once `cancel` is
    set, its C-CANCEL at once, and an A-ABORT if the source has not given its final answer
    `grace_s` later; before any cancel, an A-ABORT once the source has been silent for
    `silence_s`: no answer (`answered`, called by the C-MOVE's loop) and nothing new in
    `heard` (how many of its instances have reached the node). `sent`, `aborted` (the grace
    ran out) and `silent` say what it did."""

    def __init__(
        self,
        assoc: Any,
        msg_id: int,
        model: Any,
        cancel: threading.Event | None,
        grace_s: float,
        silence_s: float,
        heard: Callable[[], int],
    ) -> None:
        self.assoc, self.msg_id, self.model = assoc, msg_id, model
        self.cancel, self.grace_s = cancel, grace_s
        self.silence_s, self.heard = silence_s, heard
        self.sent = self.aborted = self.silent = False
        self._over = threading.Event()
        self._lock = threading.Lock()  # the C-MOVE's end against the watch's acting on it
        self._acting = False
        self._alive, self._arrived = time.monotonic(), 0
        self._thread = threading.Thread(target=self._watch, name="dicom-move-watch", daemon=True)

    def __enter__(self) -> MoveWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._over.set()
            acting = self._acting
        # Joined only when it has begun a C-CANCEL or an abort (the association must be left
        # alone till it is done); otherwise it ends on its own without touching the
        # association, and waiting for it would hold each C-MOVE up to POLL_S.
        if acting:
            self._thread.join()

    @property
    def acted(self) -> bool:
        """Whether it stepped in: a C-CANCEL sent, or the association aborted."""
        return self.sent or self.silent

    def answered(self) -> None:
        """The source answered: a sign of life."""
        self._alive = time.monotonic()

    def _watch(self) -> None:
        while not self._cancelled():
            if self._over.is_set():
                return
            if self._quiet_s() >= self.silence_s:
                if self._act():
                    self.silent = True  # before the abort: the C-MOVE's loop must know why
                    self._abort()
                return
        if self._act():
            self._cancel()

    def _cancelled(self) -> bool:
        """Whether a cancel is asked, after waiting up to POLL_S for one."""
        if self.cancel is None:
            self._over.wait(POLL_S)
            return False
        return self.cancel.wait(POLL_S)

    def _quiet_s(self) -> float:
        """How long the source has sent nothing: no answer, no new instance."""
        arrived = self.heard()
        if arrived != self._arrived:
            self._arrived, self._alive = arrived, time.monotonic()
        return time.monotonic() - self._alive

    def _act(self) -> bool:
        """Whether the C-MOVE is still under way; if so, its end waits for this watch."""
        with self._lock:
            self._acting = not self._over.is_set()
            return self._acting

    def _cancel(self) -> None:
        self.sent = True  # first: the source may answer the C-CANCEL before this runs on
        try:
            self.assoc.send_c_cancel(self.msg_id, query_model=self.model)
        except RuntimeError:  # the association ended meanwhile, and the C-MOVE with it
            self.sent = False
            return
        if self._over.wait(self.grace_s):
            return
        self.aborted = True  # before the abort: the C-MOVE's loop must know it was ours
        self._abort()

    def _abort(self) -> None:
        try:
            self.assoc.abort()
        finally:
            # pynetdicom's wait for the next answer does not notice an abort of our own (and
            # has no timeout while the C-MOVE runs; pydicom/pynetdicom#778): it ends at an
            # empty message, what pynetdicom itself queues when the peer aborts the
            # association or its connection is lost.
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

    def heard(self, msg_id: int, study_uid: str) -> int:
        """How many of the C-MOVE's C-STOREs have reached the node so far (stored or not)."""
        with self._lock:
            return sum(self._moves.get((msg_id, study_uid), ()))

    def take(self, msg_id: int, study_uid: str) -> tuple[int, int, int]:
        """(completed, failed, warning) of the C-MOVE so far, as its source would count them
        (the node answers no warning); it is no longer counted."""
        with self._lock:
            completed, failed = self._moves.pop((msg_id, study_uid), [0, 0])
        return completed, failed, 0
