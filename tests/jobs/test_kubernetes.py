"""The Kubernetes launcher against a recording stand-in of the API server (no cluster).

The real `kubernetes` client loads a kubeconfig that points at the stand-in on loopback, so
the requests asserted here are exactly what a cluster would receive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from models.spec import JobSpec
from service.config import TrainingSettings
from service.jobs.launchers.base import RunnerState
from service.jobs.launchers.kubernetes import KubernetesLauncher
from service.jobs.service import JobService
from service.jobs.store import JobStore
from service.jobs.tables import JobRow
from tests.conftest import HospitalCA

from . import k8s_standin
from .conftest import wait_for

NS = "ml"


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[k8s_standin.StandIn]:
    state = k8s_standin.StandIn()
    server = k8s_standin.start(state)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: standin, cluster: {{server: "{state.url}"}}}}]
users: [{{name: tester, user: {{token: test-token}}}}]
contexts: [{{name: standin, context: {{cluster: standin, user: tester, namespace: {NS}}}}}]
current-context: standin
"""
    )
    monkeypatch.setenv("SCANTUNE_K8S_KUBECONFIG", str(kubeconfig))
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def k8s_settings(
    settings_env: Callable[..., TrainingSettings], standin: k8s_standin.StandIn
) -> TrainingSettings:
    return settings_env(
        launcher="kubernetes",
        k8s_in_cluster=False,
        k8s_namespace=NS,
        k8s_image="registry.example.org/scantune-trainer:1.2.3",
        k8s_service_account="scantune-runner",
        k8s_env_secret="scantune-runner-env",
        k8s_node_selector={"nvidia.com/gpu.present": "true"},
        k8s_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        k8s_backoff_limit=0,
        k8s_active_deadline_s=7200,
        k8s_ttl_after_finished_s=600,
        artifact_uri="s3://models/registry",
        s3_endpoint_url="http://minio.storage:9000",
        supervisor_interval_s=0.1,
        max_gpus_per_job=2,
        s3_data_prefixes=["s3://scans/"],
    )


def claimed_job(settings: TrainingSettings, spec: JobSpec) -> tuple[JobStore, JobRow]:
    store = JobStore.open(settings.database_url)
    store.create(spec)
    [job] = store.claim_queued(1, launcher="kubernetes")
    return store, job


def expected_job(
    job: JobRow, *, resources: dict[str, Any], settings: TrainingSettings, created_at: str
) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": "scantune-trainer",
        "app.kubernetes.io/managed-by": "scantune",
        "scantune.dev/job-id": job.id,
        "scantune.dev/attempt": "1",
    }
    env = {
        "SCANTUNE_LAUNCHER": "kubernetes",
        "SCANTUNE_WORK_DIR": "/var/lib/scantune/work",
        "SCANTUNE_ARTIFACT_URI": "s3://models/registry",
        "SCANTUNE_S3_ENDPOINT_URL": "http://minio.storage:9000",
        "SCANTUNE_HEARTBEAT_INTERVAL_S": "5.0",
        "SCANTUNE_WEBHOOK_RETRIES": "4",
        "SCANTUNE_WEBHOOK_BACKOFF_S": "1.0",
        "SCANTUNE_WEBHOOK_TIMEOUT_S": "10.0",
        "SCANTUNE_LOG_LEVEL": "INFO",
        # the pod checks again what the API checked at submit, with the same settings
        "SCANTUNE_LOCAL_DATA_ROOTS": json.dumps([str(p) for p in settings.local_data_roots]),
        "SCANTUNE_S3_DATA_PREFIXES": '["s3://scans/"]',
        "SCANTUNE_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        "SCANTUNE_MODEL_GRANTS": "{}",
        "SCANTUNE_MODELS_PRIVATE": "false",
        "SCANTUNE_MAX_GPUS_PER_JOB": "2",
        "SCANTUNE_LOG_FORMAT": "auto",
        "SCANTUNE_K8S_ACTIVE_DEADLINE_S": "7200",
        "SCANTUNE_K8S_JOB_CREATED_AT": created_at,  # the runner's deadline clock
    }
    volume = {"sizeLimit": "50Gi"}  # a job cannot fill the node's disk
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"scantune-{job.id}-1", "namespace": NS, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 7200,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "scantune-runner",
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumes": [
                        {"name": "work", "emptyDir": volume},
                        {"name": "tmp", "emptyDir": volume},
                    ],
                    "containers": [
                        {
                            "name": "runner",
                            "image": "registry.example.org/scantune-trainer:1.2.3",
                            "command": ["python", "-m", "service.jobs.runner", job.id],
                            "env": [{"name": k, "value": v} for k, v in env.items()],
                            "envFrom": [{"secretRef": {"name": "scantune-runner-env"}}],
                            "resources": resources,
                            "volumeMounts": [
                                {"name": "work", "mountPath": "/var/lib/scantune/work"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "privileged": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def test_launch_creates_exactly_this_job(
    k8s_settings: TrainingSettings,
    standin: k8s_standin.StandIn,
    make_spec: Callable[..., JobSpec],
) -> None:
    spec = make_spec(resources={"gpus": 2, "memory": "16Gi", "cpu": "4"})
    store, job = claimed_job(k8s_settings, spec)
    launcher = KubernetesLauncher(k8s_settings)
    before = datetime.now(UTC)
    assert launcher.launch(job) == f"scantune-{job.id}-1"
    after = datetime.now(UTC)
    [call] = standin.calls()
    assert (call.method, call.path) == ("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    [container] = call.body["spec"]["template"]["spec"]["containers"]
    created = {e["name"]: e["value"] for e in container["env"]}["SCANTUNE_K8S_JOB_CREATED_AT"]
    assert before <= datetime.fromisoformat(created) <= after
    assert call.body == expected_job(
        job,
        resources={
            "requests": {"cpu": "4", "memory": "16Gi"},
            "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"},
        },
        settings=k8s_settings,
        created_at=created,
    )
    store.close()


def test_cpu_job_asks_for_no_gpu(
    k8s_settings: TrainingSettings,
    standin: k8s_standin.StandIn,
    make_spec: Callable[..., JobSpec],
) -> None:
    store, job = claimed_job(k8s_settings, make_spec())
    KubernetesLauncher(k8s_settings).launch(job)
    resources = standin.calls("POST")[0].body["spec"]["template"]["spec"]["containers"][0][
        "resources"
    ]
    assert resources == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    store.close()


def test_job_pods_run_as_the_configured_user(
    settings_env: Callable[..., TrainingSettings],
    standin: k8s_standin.StandIn,
    make_spec: Callable[..., JobSpec],
) -> None:
    """A trainer image built with another user: the uid and group follow the settings."""
    settings = settings_env(
        launcher="kubernetes",
        k8s_in_cluster=False,
        k8s_namespace=NS,
        k8s_run_as_user=2000,
        k8s_run_as_group=3000,
    )
    store, job = claimed_job(settings, make_spec())
    KubernetesLauncher(settings).launch(job)
    pod = standin.calls("POST")[0].body["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 3000,
        "fsGroup": 3000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    store.close()


def test_job_pods_trust_the_webhook_ca_the_api_trusts(
    settings_env: Callable[..., TrainingSettings],
    standin: k8s_standin.StandIn,
    make_spec: Callable[..., JobSpec],
    hospital_ca: HospitalCA,
) -> None:
    """The runner sends the job's webhook from its pod: it gets the same extra CA."""
    settings = settings_env(
        launcher="kubernetes",
        k8s_in_cluster=False,
        k8s_namespace=NS,
        webhook_ca_pem=hospital_ca.pem,
    )
    store, job = claimed_job(settings, make_spec())
    KubernetesLauncher(settings).launch(job)
    (container,) = standin.calls("POST")[0].body["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SCANTUNE_WEBHOOK_CA_PEM"] == hospital_ca.pem
    store.close()


def test_root_is_refused(settings_env: Callable[..., TrainingSettings]) -> None:
    with pytest.raises(ValidationError, match="k8s_run_as_user"):
        settings_env(k8s_run_as_user=0)


OOM = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
PULL = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
CRASHED = {"terminated": {"reason": "Error", "exitCode": 1}}
RUNNING = {"running": {"startedAt": "2026-11-27T20:00:00Z"}}


@pytest.mark.parametrize(
    ("job_status", "pods", "expected"),
    [
        ({"active": 1}, [("Running", RUNNING)], RunnerState("running")),
        ({"active": 1}, [("Pending", None)], RunnerState("pending")),
        ({}, [], RunnerState("pending")),
        ({"active": 1}, [("Running", OOM)], ("failed", "oom_killed", False)),
        ({"active": 1}, [("Pending", PULL)], ("failed", "image_pull_failed", False)),
        (
            {
                "failed": 1,
                "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}],
            },
            [],
            ("failed", "deadline_exceeded", False),
        ),
        ({"failed": 1}, [("Failed", CRASHED)], ("exited", None, True)),
    ],
)
def test_status_maps_pod_failures_to_reasons(
    k8s_settings: TrainingSettings,
    standin: k8s_standin.StandIn,
    make_spec: Callable[..., JobSpec],
    job_status: dict[str, Any],
    pods: list[tuple[str, dict[str, Any] | None]],
    expected: RunnerState | tuple[str, str | None, bool],
) -> None:
    store, job = claimed_job(k8s_settings, make_spec())
    launcher = KubernetesLauncher(k8s_settings)
    job.runner_ref = launcher.launch(job)
    standin.job_status[job.runner_ref] = job_status
    standin.pods = [
        k8s_standin.pod(f"p{i}", job.id, 1, phase=phase, container=c)
        for i, (phase, c) in enumerate(pods)
    ]
    state = launcher.status(job)
    if isinstance(expected, RunnerState):
        assert state == expected
    else:
        assert (state.state, state.reason, state.retryable) == expected
    reads = [r for r in standin.calls("GET") if r.path.endswith("/status")]
    assert reads[0].path == f"/apis/batch/v1/namespaces/{NS}/jobs/{job.runner_ref}/status"
    pod_lists = [r for r in standin.calls("GET") if r.path.endswith("/pods")]
    if pod_lists:
        assert pod_lists[0].query["labelSelector"] == [
            f"scantune.dev/job-id={job.id},scantune.dev/attempt=1"
        ]
    store.close()


def test_deleted_job_counts_as_exited(
    k8s_settings: TrainingSettings, make_spec: Callable[..., JobSpec]
) -> None:
    store, job = claimed_job(k8s_settings, make_spec())
    job.runner_ref = "scantune-gone-1"
    assert KubernetesLauncher(k8s_settings).status(job).state == "exited"
    store.close()


def test_service_fails_an_oom_killed_job_and_cleans_up(
    k8s_settings: TrainingSettings,
    standin: k8s_standin.StandIn,
    make_spec: Callable[..., JobSpec],
) -> None:
    service = JobService.from_settings(k8s_settings)
    service.start()
    try:
        job = service.submit(make_spec(resources={"gpus": 1}))
        wait_for(service, job.id, lambda v: bool(standin.jobs), timeout=10)
        name = next(iter(standin.jobs))
        standin.job_status[name] = {"active": 1}
        standin.pods = [k8s_standin.pod("runner-pod", job.id, 1, phase="Running", container=OOM)]
        view = wait_for(service, job.id, lambda v: v.status == "failed", timeout=10)
        assert view.error is not None and view.error.reason == "oom_killed"
        assert "OOMKilled" in view.error.detail
        assert view.attempts == 1  # an OOM would fail again: not retried
        [delete] = standin.calls("DELETE")
        assert delete.path == f"/apis/batch/v1/namespaces/{NS}/jobs/{name}"
        assert (
            delete.query.get("propagationPolicy") == ["Background"]
            or (delete.body or {}).get("propagationPolicy") == "Background"
        )
    finally:
        service.stop()


def test_cancel_deletes_the_kubernetes_job_and_reads_pod_logs(
    k8s_settings: TrainingSettings,
    standin: k8s_standin.StandIn,
    make_spec: Callable[..., JobSpec],
) -> None:
    service = JobService.from_settings(k8s_settings)
    service.start()
    try:
        job = service.submit(make_spec())
        wait_for(service, job.id, lambda v: service.store.get(v.id).runner_ref is not None)
        name = service.store.get(job.id).runner_ref
        standin.pods = [
            k8s_standin.pod("runner-pod", job.id, 1, phase="Running", container=RUNNING)
        ]
        standin.log_text = "line 1\nline 2\nline 3\n"
        assert service.logs(job.id, tail=2) == "line 2\nline 3\n"
        log_call = [r for r in standin.calls("GET") if r.path.endswith("/log")][-1]
        assert log_call.path == f"/api/v1/namespaces/{NS}/pods/runner-pod/log"
        assert log_call.query["tailLines"] == ["2"]
        view = service.cancel(job.id, actor="bob")
        assert view.status == "cancelled"
        deletes = standin.calls("DELETE")
        assert [d.path for d in deletes] == [f"/apis/batch/v1/namespaces/{NS}/jobs/{name}"]
        assert name not in standin.jobs
    finally:
        service.stop()


def test_the_kubernetes_launcher_keeps_to_the_per_client_caps(
    k8s_settings: TrainingSettings,
    standin: k8s_standin.StandIn,
    make_spec: Callable[..., JobSpec],
    settings_env: Callable[..., TrainingSettings],
) -> None:
    """Concurrent jobs per client and GPUs per job bound Kubernetes Jobs too (issue 24)."""
    from service.jobs.supervisor import Supervisor

    settings = settings_env(**{**_k8s_values(k8s_settings), "max_jobs_per_client": 1})
    store = JobStore.open(settings.database_url)
    first = store.create(make_spec(seed=1), client="radiology")[0]
    store.create(make_spec(seed=2), client="radiology")  # waits: radiology is at its cap
    other = store.create(make_spec(seed=3), client="ci")[0]
    Supervisor(store, KubernetesLauncher(settings), settings).launch_queued()
    created = {c.body["metadata"]["labels"]["scantune.dev/job-id"] for c in standin.calls("POST")}
    assert created == {first.id, other.id}
    # a row that asks for more GPUs than allowed (the setting was lowered since) never launches
    lowered = settings_env(
        **{**_k8s_values(k8s_settings), "max_gpus_per_job": 1, "max_jobs_per_client": 4}
    )
    greedy = store.create(make_spec(seed=4, resources={"gpus": 2}), client="ci")[0]
    store.cancel(first.id)
    Supervisor(store, KubernetesLauncher(lowered), lowered).launch_queued()
    assert greedy.id not in {
        c.body["metadata"]["labels"]["scantune.dev/job-id"] for c in standin.calls("POST")
    }
    failed = store.get(greedy.id)
    assert (failed.status, failed.error_reason) == ("failed", "launch_failed")
    assert "SCANTUNE_MAX_GPUS_PER_JOB" in (failed.error_detail or "")
    from service.jobs.audit_store import AuditStore

    [finished] = AuditStore(store.engine).page(action="job_finished")[0]
    assert (finished["client"], finished["detail"]) == ("ci", {"reason": "launch_failed"})
    store.close()


def _k8s_values(settings: TrainingSettings) -> dict[str, Any]:
    names = ("launcher", "k8s_in_cluster", "k8s_namespace", "k8s_image", "artifact_uri")
    return {n: getattr(settings, n) for n in names}
