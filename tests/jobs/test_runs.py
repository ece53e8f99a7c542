"""Real jobs: the local launcher runs `python -m service.jobs.runner` on a slice of the real
PneumoniaMNIST data, trains (resnet18 from scratch, 32 px) and publishes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.card import ModelAccess, ModelCard
from models.spec import JobSpec
from service.jobs.launchers.local import LocalLauncher
from service.jobs.service import JobService
from service.jobs.webhook import verify
from service.registry import Registry
from service.storage import open_store

from .conftest import finished, wait_for

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-for-tests"


def tiny_spec(data: Path | str, **overrides: Any) -> JobSpec:
    base: dict[str, Any] = {
        "model_name": "chest-xray",
        "dataset": {"uri": str(data), "format": "npz"},
        "base_model": "resnet18",
        "pretrained": False,
        "image_size": 32,
        "epochs": 1,
        "recipe": {"batch_size": 64, "early_stopping_patience": 0},
    }
    base.update(overrides)
    return JobSpec.model_validate(base)


def start_pod_runner(
    settings: Any, job_id: str, folder: Path, created: datetime | None
) -> subprocess.Popen[bytes]:
    """`python -m service.jobs.runner` as a job pod runs it: the launcher's env for children,
    `folder` as its work dir, the Job's creation time when given (as the launcher sets it);
    its output in `folder`.log."""
    from service.jobs.launchers.base import child_env
    from service.jobs.stops import JOB_CREATED_ENV

    env = {**child_env(settings), "SCANTUNE_WORK_DIR": str(folder)}
    if created is not None:
        env[JOB_CREATED_ENV] = created.isoformat()
    with folder.with_suffix(".log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service.jobs.runner", job_id], env=env, stdout=log, stderr=log
        )


def registry_of(service: JobService) -> Registry:
    s = service.settings
    return Registry(open_store(s.artifact_uri, endpoint_url=s.s3_endpoint_url))


@pytest.mark.postgres
def test_two_jobs_finish_together_with_versions_gate_and_webhook(
    job_service: Callable[..., JobService],
    pneumonia_small_npz: Path,
    receiver: Callable[..., Any],
    postgres_url: str,
) -> None:
    """Two API processes' worth of services (each with its supervisor) share PostgreSQL."""
    hook = receiver([500, 200])  # the first delivery fails and is retried
    config = {"max_concurrent_jobs": 2, "webhook_secret": SECRET, "database_url": postgres_url}
    service, other = job_service(**config), job_service(**config)
    passing = tiny_spec(
        pneumonia_small_npz,
        promote={"alias": "production", "min": {"val_auc": 0.0}},
        webhook={"url": hook.url},
    )
    failing = tiny_spec(
        pneumonia_small_npz,
        seed=1,
        promote={"alias": "staging", "max": {"val_loss": 0.0}},  # a loss is never 0
        access={"private": True, "clients": ["radiology"]},
    )
    a = service.submit(passing, actor="ci")
    b = other.submit(failing, actor="ci")
    views = [wait_for(service, j.id, finished, timeout=240) for j in (a, b)]
    assert [v.attempts for v in views] == [1, 1]  # each launched once, by one of the two
    assert [v.status for v in views] == ["succeeded", "succeeded"], service.logs(a.id)
    assert sorted(v.artifacts.version for v in views if v.artifacts) == [1, 2]

    registry = registry_of(service)
    assert registry.list_versions("chest-xray") == [1, 2]
    va, vb = views
    assert va.artifacts is not None and vb.artifacts is not None
    card = registry.get_card("chest-xray", va.artifacts.version)
    onnx = Path(va.artifacts.onnx_uri.removeprefix("file://")).read_bytes()  # type: ignore[union-attr]
    assert hashlib.sha256(onnx).hexdigest() == card.onnx_sha256 == va.artifacts.onnx_sha256
    assert card.lineage["job_id"] == va.id
    # who may use each version: the job's client owns it; shared unless its spec said private
    assert card.access == ModelAccess(owner="ci", private=False)
    private = registry.get_card("chest-xray", vb.artifacts.version).access
    assert private == ModelAccess(owner="ci", private=True, clients=("radiology",))
    assert registry.load("chest-xray", va.artifacts.version).card.version == va.artifacts.version

    assert va.promotion is not None and va.promotion.passed
    assert va.promotion.figures["val_auc"]["value"] == pytest.approx(card.metrics["val_auc"])
    assert registry.get_alias("chest-xray", "production").version == va.artifacts.version
    assert vb.promotion is not None and not vb.promotion.passed
    assert "above the maximum 0" in vb.promotion.reason
    with pytest.raises(Exception, match="alias"):
        registry.get_alias("chest-xray", "staging")

    assert va.progress == 1.0 and va.phase == "publishing" and va.attempts == 1
    assert [h["epoch"] for h in va.history] == [1]
    assert va.best_metrics is not None and "val_auc" in va.best_metrics
    assert va.metrics is not None and va.metrics["val_auc"] == pytest.approx(
        card.metrics["val_auc"]
    )

    final = wait_for(
        service, a.id, lambda v: v.webhook is not None and v.webhook.state != "pending"
    )
    assert final.webhook is not None and final.webhook.delivered and final.webhook.attempts == 2
    assert len(hook.requests) == 2
    headers, body = hook.requests[-1]
    assert verify(body, headers, SECRET)
    assert not verify(body + b" ", headers, SECRET)
    payload = json.loads(body)
    assert payload["event"] == "training_job.succeeded"
    assert payload["job"]["id"] == a.id and payload["job"]["artifacts"]["version"] >= 1
    assert "epoch 1/1" in service.logs(a.id)
    assert final.steps and final.step == final.steps  # the last step of the last epoch


def test_killed_runner_is_resumed_from_its_checkpoint(
    job_service: Callable[..., JobService], pneumonia_small_npz: Path
) -> None:
    service = job_service(max_retries=1)
    job = service.submit(tiny_spec(pneumonia_small_npz, epochs=2, base_model="mobilenet_v3_large"))
    view = wait_for(service, job.id, lambda v: len(v.history) >= 1 or finished(v), timeout=240)
    assert view.status == "running", service.logs(job.id)
    os.killpg(int(service.store.get(job.id).runner_ref or 0), signal.SIGKILL)
    view = wait_for(service, job.id, finished, timeout=240)
    assert view.status == "succeeded", service.logs(job.id)
    assert view.attempts == 2
    assert [h["epoch"] for h in view.history] == [1, 2]
    log = service.logs(job.id)
    assert "runner killed by SIGKILL" in log and "re-queued to resume" in log
    assert "attempt 2: resuming" in log
    assert view.artifacts is not None and view.artifacts.version == 1


def test_killed_runner_without_retries_fails_with_reason(
    job_service: Callable[..., JobService],
    pneumonia_small_npz: Path,
    receiver: Callable[..., Any],
    db_url: str,
) -> None:
    hook = receiver()
    service = job_service(max_retries=0, database_url=db_url, webhook_secret=SECRET)
    job = service.submit(tiny_spec(pneumonia_small_npz, webhook={"url": hook.url}))
    wait_for(service, job.id, lambda v: service.store.get(v.id).runner_ref is not None)
    started = time.monotonic()
    os.killpg(int(service.store.get(job.id).runner_ref or 0), signal.SIGKILL)
    view = wait_for(service, job.id, finished, timeout=30)
    assert time.monotonic() - started < 5  # the process exit is noticed at the next tick
    assert view.status == "failed" and view.error is not None
    assert view.error.reason == "runner_lost"
    assert "SIGKILL" in view.error.detail and "Traceback" not in view.error.detail
    assert registry_of(service).list_versions("chest-xray") == []
    # the runner is dead, so the supervisor sends the terminal webhook in its place
    wait_for(service, job.id, lambda v: v.webhook is not None and v.webhook.delivered)
    headers, body = hook.requests[0]
    assert verify(body, headers, SECRET)
    assert json.loads(body)["job"]["error"]["reason"] == "runner_lost"


def test_silent_runner_is_reaped_within_the_heartbeat_timeout(
    job_service: Callable[..., JobService], pneumonia_small_npz: Path
) -> None:
    service = job_service(max_retries=0, heartbeat_timeout_s=4)
    job = service.submit(tiny_spec(pneumonia_small_npz))
    wait_for(service, job.id, lambda v: v.phase is not None or finished(v), timeout=60)
    pid = int(service.store.get(job.id).runner_ref or 0)
    os.killpg(pid, signal.SIGSTOP)  # alive but silent: only the heartbeat can tell
    started = time.monotonic()
    view = wait_for(service, job.id, finished, timeout=30)
    assert time.monotonic() - started < 4 + 5
    assert view.status == "failed" and view.error is not None
    assert view.error.reason == "runner_lost" and "no heartbeat" in view.error.detail


def test_cancel_mid_training_publishes_nothing(
    job_service: Callable[..., JobService],
    pneumonia_small_npz: Path,
    receiver: Callable[..., Any],
) -> None:
    hook = receiver()
    service = job_service(webhook_secret=SECRET)
    job = service.submit(tiny_spec(pneumonia_small_npz, epochs=20, webhook={"url": hook.url}))
    wait_for(service, job.id, lambda v: v.phase == "training" or finished(v), timeout=240)
    view = service.cancel(job.id, actor="alice")
    assert view.status == "cancelled"
    assert view.error is not None and view.error.detail == "cancelled by alice"
    pid = int(service.store.get(job.id).runner_ref or 0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the runner is still alive after cancel")
    time.sleep(1.0)
    after = wait_for(service, job.id, lambda v: v.webhook is not None and v.webhook.delivered)
    assert after.status == "cancelled" and after.artifacts is None
    assert registry_of(service).list_versions("chest-xray") == []
    assert service.store.versions("chest-xray") == []
    assert json.loads(hook.requests[0][1])["event"] == "training_job.cancelled"


def test_unreadable_dataset_fails_with_data_error_and_a_short_detail(
    job_service: Callable[..., JobService], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not an npz archive")
    service = job_service()
    job = service.submit(tiny_spec(bad))
    view = wait_for(service, job.id, finished, timeout=120)
    assert view.status == "failed" and view.error is not None
    assert view.error.reason == "data_error"
    assert view.error.detail.startswith("DataError: ") and "bad.npz" in view.error.detail
    assert "\n" not in view.error.detail and "Traceback" not in view.error.detail
    assert "Traceback (most recent call last)" in service.logs(job.id)  # the full story
    assert view.attempts == 1  # a runner that reported its failure is not retried
    launcher = service.launcher
    assert isinstance(launcher, LocalLauncher)
    deadline = time.monotonic() + 10
    while launcher.tracked() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert launcher.tracked() == set()  # the exited runner was reaped, not left a zombie


@pytest.mark.s3
def test_pod_runner_resumes_on_a_fresh_disk_and_publishes_to_s3(
    settings_env: Callable[..., Any],
    pneumonia_small_npz: Path,
    tmp_path: Path,
    s3_bucket: str,
    s3_env: dict[str, str],
) -> None:
    """What a pod ended mid-run (SIGTERM: its node drained or preempted) and the next attempt
    do: the first pauses its job, the second pod has none of its files, and data, checkpoints
    and the published version all live in S3 (moto over HTTP)."""
    from models.uri import s3_client
    from service.jobs.store import JobStore

    endpoint = s3_env["SCANTUNE_S3_ENDPOINT_URL"]
    client = s3_client(endpoint)
    client.upload_file(str(pneumonia_small_npz), s3_bucket, "data/small.npz")
    settings = settings_env(
        launcher="kubernetes",
        heartbeat_interval_s=0.5,
        artifact_uri=f"s3://{s3_bucket}/registry",
        s3_endpoint_url=endpoint,
        s3_data_prefixes=[f"s3://{s3_bucket}/data/"],
    )
    store = JobStore.open(settings.database_url)
    artifacts = open_store(settings.artifact_uri, endpoint_url=endpoint)
    job_id = store.create(
        tiny_spec(f"s3://{s3_bucket}/data/small.npz", epochs=2, base_model="mobilenet_v3_large")
    )[0].id

    def run_pod(name: str) -> subprocess.Popen[bytes]:
        [job] = store.claim_queued(1, launcher="kubernetes")
        return start_pod_runner(settings, job.id, tmp_path / name, datetime.now(UTC))

    first = run_pod("pod-1")
    key = f"jobs/{job_id}/checkpoints/last.pt"
    deadline = time.monotonic() + 240
    while not artifacts.exists(key) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    first.terminate()
    assert first.wait(timeout=30) == 0, (tmp_path / "pod-1.log").read_text()
    assert artifacts.exists(key), (tmp_path / "pod-1.log").read_text()
    assert "interrupted; queued to resume" in (tmp_path / "pod-1.log").read_text()
    paused = store.get(job_id)
    assert (paused.status, paused.attempts, paused.pauses) == ("queued", 1, 1)

    second = run_pod("pod-2")
    assert second.wait(timeout=240) == 0, (tmp_path / "pod-2.log").read_text()
    log = (tmp_path / "pod-2.log").read_text()
    assert "restored 2 checkpoint file(s)" in log and "attempt 2: resuming" in log
    job = store.get(job_id)
    assert (job.status, job.attempts, job.pauses) == ("succeeded", 2, 1)
    assert [h["epoch"] for h in job.history] == [1, 2]
    assert "epoch 1/2" not in log  # epoch 1 came from the stored checkpoint, not retraining
    assert artifacts.list_keys(f"jobs/{job_id}") == []  # stored checkpoints go on success

    prefix = "registry/models/chest-xray/versions/1"
    assert job.artifacts is not None
    assert job.artifacts["onnx_uri"] == f"s3://{s3_bucket}/{prefix}/model.onnx"
    card = ModelCard.from_json(
        client.get_object(Bucket=s3_bucket, Key=f"{prefix}/card.json")["Body"].read()
    )
    onnx = client.get_object(Bucket=s3_bucket, Key=f"{prefix}/model.onnx")["Body"].read()
    assert hashlib.sha256(onnx).hexdigest() == card.onnx_sha256 == job.artifacts["onnx_sha256"]
    assert card.version == 1 and card.dataset.uri == f"s3://{s3_bucket}/data/small.npz"
    assert card.lineage["job_id"] == job_id
    assert not (tmp_path / "pod-2" / job_id / "cache").exists()
    store.close()


@pytest.mark.parametrize("clock", ["job_created", "runner_age"])
def test_a_pod_ended_by_its_jobs_deadline_fails_the_job_instead_of_pausing(
    clock: str, settings_env: Callable[..., Any], pneumonia_small_npz: Path, tmp_path: Path
) -> None:
    """The deadline's SIGTERM is told from a drain's: paused, the job would get a fresh
    deadline on every relaunch and never run out of time. job_created: the pod waited for a
    node for nearly all of its Job's hour (the launcher's creation time in its env), so a
    SIGTERM seconds after the runner starts is the deadline. runner_age: no such env (a Job
    made by an older API), so the runner's own age counts, less the start-up margin."""
    from service.jobs.stops import deadline_margin_s
    from service.jobs.store import JobStore

    deadline_s = 3600 if clock == "job_created" else 4
    settings = settings_env(launcher="kubernetes", k8s_active_deadline_s=deadline_s)
    store = JobStore.open(settings.database_url)
    job_id = store.create(tiny_spec(pneumonia_small_npz, epochs=20))[0].id
    [job] = store.claim_queued(1, launcher="kubernetes")
    created = datetime.now(UTC) - timedelta(seconds=deadline_s - 30)
    pod = start_pod_runner(
        settings, job.id, tmp_path / "pod", created if clock == "job_created" else None
    )
    log = tmp_path / "pod.log"
    while store.get(job_id).phase is None and pod.poll() is None:
        time.sleep(0.1)  # its runner is running (and counting its age)
    if clock == "runner_age":
        time.sleep(4 - deadline_margin_s(4) + 0.5)  # past the deadline, less the margin
    pod.terminate()
    assert pod.wait(timeout=30) == 1, log.read_text()
    failed = store.get(job_id)
    assert (failed.status, failed.error_reason, failed.pauses) == ("failed", "deadline_exceeded", 0)
    limit = f"SCANTUNE_K8S_ACTIVE_DEADLINE_S={deadline_s}s"
    assert failed.error_detail and limit in failed.error_detail
    store.close()


def test_the_job_creation_time_is_read_only_when_well_formed() -> None:
    from service.jobs.stops import JOB_CREATED_ENV, job_created_at

    stamp = "2026-12-06T11:00:00+00:00"
    assert job_created_at({JOB_CREATED_ENV: stamp}) == 1796554800.0
    assert job_created_at({JOB_CREATED_ENV: "yesterday"}) is None
    assert job_created_at({}) is None


def test_runner_stops_itself_when_the_job_is_taken_from_it(
    job_service: Callable[..., JobService], pneumonia_small_npz: Path
) -> None:
    """No signal reaches it (another host's API cancelled it): `should_stop` notices."""
    service = job_service()
    job = service.submit(tiny_spec(pneumonia_small_npz, epochs=20))
    wait_for(service, job.id, lambda v: v.phase == "training" or finished(v), timeout=240)
    launcher = service.launcher
    assert isinstance(launcher, LocalLauncher)
    pid = launcher.running_pids()[job.id]
    service.store.cancel(job.id)  # the row only: nobody signals the runner
    deadline = time.monotonic() + 15
    while job.id in launcher.running_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.id not in launcher.running_pids(), f"runner {pid} did not stop by itself"
    log = service.logs(job.id)
    assert "stopped (TrainingCancelled" in log and "it is now cancelled" in log
    assert service.store.versions("chest-xray") == []


def test_a_stop_mid_publish_resumes_to_the_same_whole_version(
    store: Any, settings_env: Callable[..., Any], pneumonia_small_npz: Path
) -> None:
    """SIGINT raises StopRequested wherever the runner is; here after the version's first
    file is uploaded, before its card (the card goes last, so no reader sees the half). The
    job pauses keeping its version number; the next attempt publishes that same version whole,
    without training again, and no second version appears."""
    from service.jobs.runner import EXIT_OK, JobRunner
    from service.jobs.stops import StopRequested

    settings = settings_env()
    artifacts = open_store(settings.artifact_uri)
    uploads: list[str] = []

    class StopOnSecondUpload:
        def __getattr__(self, name: str) -> Any:
            return getattr(artifacts, name)

        def put_file(self, key: str, path: Path) -> None:
            if uploads:
                raise StopRequested  # what the service's SIGINT does mid-upload
            uploads.append(key)
            artifacts.put_file(key, path)

    job_id = store.create(tiny_spec(pneumonia_small_npz))[0].id
    store.claim_queued(1, launcher="local")
    stopped = JobRunner(settings, job_id, store=store, artifacts=StopOnSecondUpload())  # type: ignore[arg-type]
    assert stopped.run() == EXIT_OK
    paused = store.get(job_id)
    assert (paused.status, paused.pauses, paused.version) == ("queued", 1, 1)
    registry = Registry(artifacts)
    prefix = "models/chest-xray/versions/1"
    assert len(uploads) == 1 and uploads[0].startswith(prefix)
    assert registry.list_versions("chest-xray") == []  # no card: not a version yet

    store.claim_queued(1, launcher="local")
    assert JobRunner(settings, job_id, store=store).run() == EXIT_OK
    job = store.get(job_id)
    assert (job.status, job.attempts, job.version, job.history and len(job.history)) == (
        "succeeded",
        2,
        1,
        1,
    )
    assert registry.list_versions("chest-xray") == [1]
    card = registry.get_card("chest-xray", 1)
    onnx = artifacts.get_bytes(f"{prefix}/model.onnx")
    assert hashlib.sha256(onnx).hexdigest() == card.onnx_sha256
    assert card.lineage["job_id"] == job_id
