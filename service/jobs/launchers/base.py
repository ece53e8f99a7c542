"""The launcher interface, and the settings → implementation mapping."""

from __future__ import annotations

import importlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from service.config import TrainingSettings
from service.jobs.tables import JobRow

LAUNCHERS = {
    "local": "service.jobs.launchers.local:LocalLauncher",
    "kubernetes": "service.jobs.launchers.kubernetes:KubernetesLauncher",
}

State = Literal["pending", "running", "exited", "failed", "unknown"]


@dataclass(frozen=True)
class RunnerState:
    """What the launcher knows of a job's runner.

    pending: accepted but not started (a pod waiting for a node); running: alive;
    exited: gone without a launcher-level failure (the job row says how it ended, or the
    runner died); failed: the platform killed it, with `reason` (oom_killed, image_pull_failed,
    deadline_exceeded...) and whether a retry could help; unknown: nothing to go on, so the
    heartbeat decides.
    """

    state: State
    reason: str | None = None
    detail: str | None = None
    retryable: bool = True


class Launcher(ABC):
    name: str
    limits_slots: bool = True
    """Whether `max_concurrent_jobs` bounds how many jobs this launcher runs at once."""

    @abstractmethod
    def launch(self, job: JobRow) -> str:
        """Start the runner for `job` (already marked running); returns its reference."""

    @abstractmethod
    def status(self, job: JobRow) -> RunnerState: ...

    @abstractmethod
    def cancel(self, job: JobRow) -> None:
        """Stop the runner if it is still there; a no-op otherwise."""

    @abstractmethod
    def logs(self, job: JobRow, tail: int | None = None) -> str | None:
        """The runner's output, or None when this launcher has none for the job."""

    def housekeeping(self, running_ids: set[str]) -> None:  # noqa: B027 - optional hook
        """Forget runners of jobs that are no longer running (called every supervisor tick)."""

    def close(self) -> list[tuple[str, str]]:
        """Release clients. Remote runners are left to run (they heartbeat on their own); a
        launcher whose runners are this process's children stops them (`LocalLauncher`).
        Returns (job id, runner reference) of each runner it had to kill: one that did not
        pause when asked, whose job is still marked running."""
        return []


def make_launcher(settings: TrainingSettings) -> Launcher:
    module_name, class_name = LAUNCHERS[settings.launcher].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    launcher: Launcher = cls(settings)
    return launcher


def settings_env(settings: TrainingSettings) -> dict[str, str | None]:
    """`settings` as SCANTUNE_* variables, so a runner process reads exactly these settings.

    None values map to None: the caller removes the variable rather than setting it empty.
    """
    out: dict[str, str | None] = {}
    for name, value in settings.model_dump(mode="json").items():
        key = f"SCANTUNE_{name.upper()}"
        if value is None:
            out[key] = None
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        else:
            out[key] = json.dumps(value)
    return out


def child_env(settings: TrainingSettings) -> dict[str, str]:
    """This process's environment with the settings written over it."""
    env = dict(os.environ)
    for key, value in settings_env(settings).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class JobLimitExceeded(RuntimeError):
    """A job asks for more than its client may have (GPUs per job)."""


def check_job_limits(job: JobRow, settings: TrainingSettings) -> None:
    """What every launcher re-checks before it starts a runner: the API checked it at
    submit, but settings may have changed, and a launcher must not trust the row alone."""
    gpus = int((job.spec.get("resources") or {}).get("gpus", 0))
    if gpus > settings.max_gpus_per_job:
        raise JobLimitExceeded(
            f"the job asks for {gpus} GPUs; at most {settings.max_gpus_per_job} per job"
            " (SCANTUNE_MAX_GPUS_PER_JOB)"
        )


def tail_lines(text: str, tail: int | None) -> str:
    if tail is None:
        return text
    if tail <= 0:
        return ""
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail:])
