"""The runner's bookkeeping without training: what it does with jobs it cannot run."""

from __future__ import annotations

from collections.abc import Callable

from models.spec import JobSpec
from service.config import TrainingSettings
from service.jobs.runner import EXIT_FAILED, EXIT_OK, JobRunner
from service.jobs.store import JobStore


def test_a_job_not_running_is_left_alone(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    row, _ = store.create(make_spec())
    runner = JobRunner(settings_env(), row.id, store=store)
    assert runner.run() == EXIT_OK
    assert store.get(row.id).status == "queued"


def test_a_spec_that_no_longer_validates_fails_the_job(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    row, _ = store.create(make_spec())
    store.claim_queued(1, launcher="local")
    store.set_fields(row.id, spec={**row.spec, "retired_field": 1})
    runner = JobRunner(settings_env(), row.id, store=store)
    assert runner.run() == EXIT_FAILED
    job = store.get(row.id)
    assert (job.status, job.error_reason) == ("failed", "invalid_spec")
    assert "retired_field" in (job.error_detail or "")
