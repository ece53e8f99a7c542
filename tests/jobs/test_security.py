"""The jobs backend's own security checks: per-client caps at claim time, and a runner
(a local subprocess or a Kubernetes pod) that re-checks what the API checked at submit,
with the same settings, before it reads anything; and its audit records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from models.spec import JobSpec
from service.config import TrainingSettings
from service.jobs.audit_store import AuditStore
from service.jobs.runner import EXIT_FAILED, JobRunner
from service.jobs.store import JobStore


def test_claims_leave_out_clients_at_their_cap(
    store: JobStore, make_spec: Callable[..., JobSpec]
) -> None:
    a1 = store.create(make_spec(seed=1), client="a")[0]
    store.create(make_spec(seed=2), client="a")
    store.create(make_spec(seed=3), client="a")
    b1 = store.create(make_spec(seed=4), client="b")[0]
    claimed = store.claim_queued(10, launcher="local", per_client=1)
    assert [j.id for j in claimed] == [a1.id, b1.id]
    assert store.claim_queued(10, launcher="local", per_client=1) == []  # both at their cap
    assert len(store.claim_queued(10, launcher="local", per_client=2)) == 1


def run_job(store: JobStore, spec: JobSpec, settings: TrainingSettings) -> tuple[int, str]:
    row, _ = store.create(spec, client="ci")
    store.claim_queued(1, launcher="local")
    return JobRunner(settings, row.id, store=store).run(), row.id


def test_the_runner_refuses_data_outside_its_roots(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
    tmp_path: Path,
) -> None:
    """Accepted by an API with other settings (or written to the row directly): the runner
    applies its own, and fails the job before training starts."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = settings_env(local_data_roots=[str(elsewhere)])
    code, job_id = run_job(store, make_spec(), settings)
    assert code == EXIT_FAILED
    job = store.get(job_id)
    assert (job.status, job.error_reason, job.phase) == ("failed", "not_allowed", None)
    assert "SCANTUNE_LOCAL_DATA_ROOTS" in (job.error_detail or "")
    items, _ = AuditStore(store.engine).page(action="job_finished")
    assert [(r["client"], r["outcome"], r["detail"]["reason"]) for r in items] == [
        ("ci", "failed", "not_allowed")
    ]


def test_the_runner_refuses_more_gpus_than_its_settings_allow(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    settings = settings_env(max_gpus_per_job=0)
    code, job_id = run_job(store, make_spec(resources={"gpus": 1}), settings)
    assert code == EXIT_FAILED
    assert "SCANTUNE_MAX_GPUS_PER_JOB" in (store.get(job_id).error_detail or "")


def test_the_runner_refuses_to_publish_over_another_clients_model(
    store: JobStore,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    owner = store.create(make_spec(seed=9), client="radiology")[0]
    store.claim_queued(1, launcher="local")
    store.allocate_version(owner.id, 1)
    code, job_id = run_job(store, make_spec(), settings_env(max_jobs_per_client=4))
    assert code == EXIT_FAILED
    job = store.get(job_id)
    assert job.error_reason == "not_allowed" and "another client" in (job.error_detail or "")
