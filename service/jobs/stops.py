"""The signals that stop a job's runner, and what each means for its job.

SIGINT (the runner's service stopping) raises KeyboardInterrupt wherever the runner is, and
the runner pauses its job: queued to resume from the last checkpoint (written to a temporary
name and renamed, so it is whole). In a pod, SIGTERM comes with a grace period before SIGKILL
when the pod ends: its node drained or preempted (a pause too), or its Job's deadline reached
(a failure: relaunched, the job would only run out of time again). The two are told apart by
the runner's age. Locally SIGTERM is the cancel, which the job row already records.
"""

from __future__ import annotations

import signal
import time
from typing import Any


def deadline_margin_s(deadline_s: float) -> float:
    """How long before its Job's deadline a pod's SIGTERM is taken for that deadline: the
    time a pod may take to start (scheduling, pulling the trainer image), capped at a quarter
    of the deadline. A drain that late fails the job as out of time; one earlier pauses it."""
    return min(15 * 60.0, deadline_s / 4)


class StopSignals:
    """Installs the handlers; `deadline_reached` says which stop a KeyboardInterrupt was."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.deadline_reached = False
        self._born = time.monotonic()

    def install(self, launcher: str) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if launcher == "kubernetes":
            # As the pod's PID 1 with no handler it would ignore SIGTERM until SIGKILLed.
            signal.signal(signal.SIGTERM, self.on_pod_end)

    def on_pod_end(self, sig: int, frame: Any) -> None:
        age = time.monotonic() - self._born
        self.deadline_reached = age >= self.deadline_s - deadline_margin_s(self.deadline_s)
        raise KeyboardInterrupt
