"""The job state machine: statuses, phases inside `running`, and the legal moves between them."""

from __future__ import annotations

from enum import StrEnum

from service.errors import Conflict, NotFound


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Phase(StrEnum):
    """Where a running job is; kept on the row after it ends to say how far it got."""

    PREPARING_DATA = "preparing_data"
    TRAINING = "training"
    EVALUATING = "evaluating"
    EXPORTING = "exporting"
    PUBLISHING = "publishing"


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

# running -> queued is only the supervisor re-queueing a dead runner for a resume-retry.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


class IllegalTransition(Conflict):
    """A move the state machine does not allow, or one another process made first."""

    title = "Illegal state transition"


def check_transition(current: Status | str, target: Status | str) -> None:
    """Raise IllegalTransition unless `current -> target` is a legal move."""
    current, target = Status(current), Status(target)
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"a {current.value} job cannot become {target.value}")


def phase_for(name: str | None) -> Phase | None:
    """The phase a trainer progress event names; unknown names count as training."""
    if name is None:
        return None
    aliases = {
        "data": Phase.PREPARING_DATA,
        "prepare": Phase.PREPARING_DATA,
        "preparing": Phase.PREPARING_DATA,
        "loading_data": Phase.PREPARING_DATA,
        "train": Phase.TRAINING,
        "evaluate": Phase.EVALUATING,
        "evaluation": Phase.EVALUATING,
        "calibrating": Phase.EVALUATING,
        "calibration": Phase.EVALUATING,
        "export": Phase.EXPORTING,
        "parity": Phase.EXPORTING,
        "publish": Phase.PUBLISHING,
    }
    try:
        return Phase(name)
    except ValueError:
        return aliases.get(name, Phase.TRAINING)


class JobNotFound(NotFound):
    title = "Job not found"


class ForeignJob(JobNotFound):
    """Another client's job: answered exactly like a missing one, and audited."""
