"""The signals that stop a job's runner, and what each means for its job.

SIGINT (the runner's service stopping) raises `StopRequested` wherever the runner is, and
the runner pauses its job: queued to resume from the last checkpoint (written to a temporary
name and renamed, so it is whole). In a pod, SIGTERM comes with a grace period before SIGKILL
when the pod ends: its node drained or preempted (a pause too), or its Job's deadline reached
(a failure: relaunched, the job would only run out of time again). The two are told apart by
the time since the launcher created the Job (`JOB_CREATED_ENV`, which the deadline counts
from), else by the runner's age. Locally SIGTERM is the cancel, which the job row records.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

JOB_CREATED_ENV = "SCANTUNE_K8S_JOB_CREATED_AT"
"""When the launcher created this attempt's Job (ISO 8601, UTC): set in the pod's env."""
CLOCK_SKEW_S = 60.0
"""Tolerance between the API's clock and the node's, and for the Job controller's lag."""


def deadline_margin_s(deadline_s: float, *, from_job_start: bool = False) -> float:
    """How long before its Job's deadline a pod's SIGTERM is taken for that deadline. Counted
    from the Job's creation, only clock skew; counted from the runner's own start, also the
    time a pod may take to start (scheduling, pulling the trainer image). Capped at a quarter
    of the deadline. A drain that late fails the job as out of time; one earlier pauses it."""
    return min(CLOCK_SKEW_S if from_job_start else 15 * 60.0, deadline_s / 4)


def job_created_at(environ: Mapping[str, str] = os.environ) -> float | None:
    """The pod's Job creation time in epoch seconds, or None (absent or unreadable)."""
    raw = environ.get(JOB_CREATED_ENV)
    try:
        return datetime.fromisoformat(raw).timestamp() if raw else None
    except ValueError:
        return None


class StopRequested(BaseException):
    """What the handlers raise: a BaseException, so no `except Exception` on the way swallows it.
    Not KeyboardInterrupt: one that passes through Python source run from C (PyRun_String, as C
    extensions do: pybind11's py::exec, say) marks the interpreter to end by SIGINT at exit even
    when caught further up (CPython's run_eval_code_obj), and the runner's exit code was lost."""


class StopSignals:
    """Installs the handlers; `deadline_reached` says which stop a StopRequested was."""

    def __init__(self, deadline_s: float, created_at: float | None = None) -> None:
        self.deadline_s = deadline_s
        self.deadline_reached = False
        # When the deadline began, on the monotonic clock: the Job's creation (read off the
        # wall clock once), else the runner's own start.
        waited = time.time() - created_at if created_at is not None else 0.0
        self._since = time.monotonic() - waited
        self._margin = deadline_margin_s(deadline_s, from_job_start=created_at is not None)

    def install(self, launcher: str) -> None:
        signal.signal(signal.SIGINT, self.on_interrupt)
        if launcher == "kubernetes":
            # As the pod's PID 1 with no handler it would ignore SIGTERM until SIGKILLed.
            signal.signal(signal.SIGTERM, self.on_pod_end)

    def on_interrupt(self, sig: int, frame: Any) -> None:
        raise StopRequested

    def on_pod_end(self, sig: int, frame: Any) -> None:
        elapsed = time.monotonic() - self._since
        self.deadline_reached = elapsed >= self.deadline_s - self._margin
        raise StopRequested
