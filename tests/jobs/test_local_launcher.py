"""The local launcher's stop: runners are asked to pause, and one that does not is killed
with its job paused all the same (queued to resume, not counted as a failure)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from models.spec import JobSpec
from service.config import TrainingSettings
from service.jobs.launchers import local
from service.jobs.launchers.local import LocalLauncher
from service.jobs.service import JobService
from service.jobs.store import JobStore
from service.jobs.tables import JobRow

# A runner deaf to the pause, as one stuck in a long native call (an export, a decode) is.
DEAF = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"


class DeafLauncher(LocalLauncher):
    def command(self, job: JobRow) -> list[str]:
        return [sys.executable, "-c", DEAF]


@dataclass
class Stopping:
    service: JobService
    settings: TrainingSettings
    job_id: str


@pytest.fixture
def deaf_runner(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> Stopping:
    """A job service whose one job's runner is deaf to the pause, launched and running."""
    monkeypatch.setattr(local, "PAUSE_GRACE_S", 0.5)
    settings = settings_env()
    service = JobService(settings, store, DeafLauncher(settings))
    job_id = store.create(make_spec())[0].id
    service.supervisor.tick()
    return Stopping(service, settings, job_id)


def test_a_runner_that_does_not_pause_is_killed_and_its_job_paused_all_the_same(
    deaf_runner: Stopping, store: JobStore
) -> None:
    pid = int(store.get(deaf_runner.job_id).runner_ref or 0)
    time.sleep(0.5)  # the runner has set its SIGINT aside

    deaf_runner.service.stop()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    job = store.get(deaf_runner.job_id)
    assert (job.status, job.attempts, job.pauses, job.runner_ref) == ("queued", 1, 1, None)
    log = (local.job_dir(deaf_runner.settings, job.id) / local.LOG_FILE).read_text()
    assert "attempt 1: the runner did not pause in time and was killed; queued to resume" in log


def test_a_killed_runner_whose_job_moved_on_leaves_the_job_alone(
    deaf_runner: Stopping, store: JobStore
) -> None:
    """Cancelled meanwhile (or claimed again by another API process): not this stop's to pause."""
    store.cancel(deaf_runner.job_id)
    time.sleep(0.5)

    deaf_runner.service.stop()

    job = store.get(deaf_runner.job_id)
    assert (job.status, job.pauses) == ("cancelled", 0)
