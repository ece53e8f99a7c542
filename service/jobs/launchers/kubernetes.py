"""Kubernetes launcher: one `batch/v1` Job per attempt of a training job, on a GPU node.

The official client is imported here only, and its configuration (in-cluster service
account, or the local kubeconfig) is loaded in exactly one place: `_api_client`. Pod-level
failures become job failures with a reason: OOMKilled → oom_killed, image pull errors →
image_pull_failed, the Job's deadline → deadline_exceeded (none retried: another attempt
would fail the same way); an evicted pod or a lost node is retried like a dead runner.

Job pods pass the Pod Security "restricted" profile, hardened like the chart's Deployments:
the image's non-root user, RuntimeDefault seccomp, no capabilities, a read-only root
filesystem. The runner writes only under its work dir and /tmp (tempfile, MPLCONFIGDIR set by
the image), both emptyDirs; HOME is the read-only /app, as in the api container, which runs
the same runner under the local launcher.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from service.config import TrainingSettings
from service.jobs.launchers.base import (
    Launcher,
    RunnerState,
    check_job_limits,
    settings_env,
    tail_lines,
)
from service.jobs.stops import JOB_CREATED_ENV
from service.jobs.tables import JobRow

log = logging.getLogger(__name__)

APP_LABEL = "app.kubernetes.io/name"
APP_NAME = "scantune-trainer"
JOB_ID_LABEL = "scantune.dev/job-id"
ATTEMPT_LABEL = "scantune.dev/attempt"
POD_WORK_DIR = "/var/lib/scantune/work"
# emptyDir volume name -> mount path: all the runner writes under its read-only root.
SCRATCH = {"work": POD_WORK_DIR, "tmp": "/tmp"}
IMAGE_PULL_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_ERRORS = {"CreateContainerConfigError", "CreateContainerError"}
# Settings the pod needs that are not secret; secrets come from `k8s_env_secret`.
POD_SETTINGS = (
    "artifact_uri",
    "s3_endpoint_url",
    "s3_region",
    "heartbeat_interval_s",
    "webhook_retries",
    "webhook_backoff_s",
    "webhook_timeout_s",
    "log_level",
    # the same data, webhook and tenancy limits the API checked at submit (issue 24)
    "local_data_roots",
    "s3_data_prefixes",
    "webhook_allowed_hosts",
    "webhook_ca_pem",
    "model_grants",
    "models_private",  # the card records who may use the version the pod publishes
    "max_gpus_per_job",
    "log_format",
    "k8s_active_deadline_s",  # the runner tells a drain's SIGTERM from the deadline's
)


def _import_kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError as exc:  # pragma: no cover - part of the train extra
        raise ImportError(
            "the kubernetes launcher needs the kubernetes client: pip install 'scantune[train]'"
        ) from exc
    return kubernetes


def job_name(job: JobRow) -> str:
    """DNS-1123 name, one per attempt, so a retry never collides with a Job being deleted."""
    return f"scantune-{job.id}-{job.attempts}".lower()


class KubernetesLauncher(Launcher):
    name = "kubernetes"
    limits_slots = False  # the cluster's scheduler queues pods; GPUs are the real limit

    def __init__(self, settings: TrainingSettings, *, api_client: Any = None) -> None:
        self.settings = settings
        self._client = api_client
        self._lock = threading.Lock()

    def _api_client(self) -> Any:
        """The one place cluster configuration is loaded (lazily, on first use)."""
        with self._lock:
            if self._client is None:
                k8s = _import_kubernetes()
                if self.settings.k8s_in_cluster:
                    k8s.config.load_incluster_config()
                else:
                    kubeconfig = self.settings.k8s_kubeconfig
                    k8s.config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None)
                self._client = k8s.client.ApiClient()
            return self._client

    def _batch(self) -> Any:
        return _import_kubernetes().client.BatchV1Api(self._api_client())

    def _core(self) -> Any:
        return _import_kubernetes().client.CoreV1Api(self._api_client())

    # the Job object
    def manifest(self, job: JobRow) -> Any:
        """The V1Job for this attempt of `job`."""
        m = _import_kubernetes().client
        s = self.settings
        labels = {
            APP_LABEL: APP_NAME,
            "app.kubernetes.io/managed-by": "scantune",
            JOB_ID_LABEL: job.id,
            ATTEMPT_LABEL: str(job.attempts),
        }
        pod = m.V1PodSpec(
            restart_policy="Never",
            containers=[self._container(job)],
            service_account_name=s.k8s_service_account,
            node_selector=s.k8s_node_selector or None,
            tolerations=[m.V1Toleration(**_toleration(t)) for t in s.k8s_tolerations] or None,
            security_context=self._pod_security(),
            volumes=[
                m.V1Volume(
                    name=n, empty_dir=m.V1EmptyDirVolumeSource(size_limit=s.job_volume_limit)
                )
                for n in SCRATCH
            ],
        )
        return m.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=m.V1ObjectMeta(name=job_name(job), namespace=s.k8s_namespace, labels=labels),
            spec=m.V1JobSpec(
                backoff_limit=s.k8s_backoff_limit,
                active_deadline_seconds=s.k8s_active_deadline_s,
                ttl_seconds_after_finished=s.k8s_ttl_after_finished_s,
                template=m.V1PodTemplateSpec(metadata=m.V1ObjectMeta(labels=labels), spec=pod),
            ),
        )

    def _container(self, job: JobRow) -> Any:
        m = _import_kubernetes().client
        secret = self.settings.k8s_env_secret
        return m.V1Container(
            name="runner",
            image=self.settings.k8s_image,
            command=["python", "-m", "service.jobs.runner", job.id],
            env=[m.V1EnvVar(name=k, value=v) for k, v in self._pod_env().items()]
            # the Job's deadline counts from about now: the runner tells it from a drain by this
            + [m.V1EnvVar(name=JOB_CREATED_ENV, value=datetime.now(UTC).isoformat())],
            env_from=(
                [m.V1EnvFromSource(secret_ref=m.V1SecretEnvSource(name=secret))] if secret else None
            ),
            resources=self._resources(job),
            volume_mounts=[m.V1VolumeMount(name=n, mount_path=p) for n, p in SCRATCH.items()],
            security_context=m.V1SecurityContext(
                allow_privilege_escalation=False,
                privileged=False,
                read_only_root_filesystem=True,
                capabilities=m.V1Capabilities(drop=["ALL"]),
            ),
        )

    def _pod_security(self) -> Any:
        """The image's non-root user (the chart's pods use the same uid) and default seccomp."""
        m = _import_kubernetes().client
        s = self.settings
        return m.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=s.k8s_run_as_user,
            run_as_group=s.k8s_run_as_group,
            fs_group=s.k8s_run_as_group,
            seccomp_profile=m.V1SeccompProfile(type="RuntimeDefault"),
        )

    def _pod_env(self) -> dict[str, str]:
        s = self.settings
        env = {"SCANTUNE_LAUNCHER": "kubernetes", "SCANTUNE_WORK_DIR": POD_WORK_DIR}
        encoded = settings_env(s)
        for name in POD_SETTINGS:
            value = encoded[f"SCANTUNE_{name.upper()}"]
            if value is not None:
                env[f"SCANTUNE_{name.upper()}"] = value
        if not s.k8s_env_secret:  # no secret to carry it: the pod must still find the store
            env["SCANTUNE_DATABASE_URL"] = s.database_url
        return env

    def _resources(self, job: JobRow) -> Any:
        m = _import_kubernetes().client
        res = job.spec.get("resources") or {}
        memory, cpu, gpus = res.get("memory", "8Gi"), res.get("cpu", "2"), int(res.get("gpus", 0))
        limits = {"memory": memory}
        if gpus > 0:
            limits[self.settings.k8s_gpu_resource] = str(gpus)
        return m.V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}, limits=limits)

    # the Launcher interface
    def launch(self, job: JobRow) -> str:
        check_job_limits(job, self.settings)
        body = self.manifest(job)
        self._batch().create_namespaced_job(namespace=self.settings.k8s_namespace, body=body)
        return job_name(job)

    def status(self, job: JobRow) -> RunnerState:
        name = job.runner_ref
        if not name:
            return RunnerState("unknown")
        try:
            k8s_job = self._batch().read_namespaced_job_status(name, self.settings.k8s_namespace)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return RunnerState("exited", detail=f"Kubernetes Job {name} no longer exists")
            log.warning("cannot read Kubernetes Job %s: %s", name, exc)
            return RunnerState("unknown")
        for cond in (k8s_job.status.conditions or []) if k8s_job.status else []:
            if (
                cond.type == "Failed"
                and cond.status == "True"
                and cond.reason == "DeadlineExceeded"
            ):
                return RunnerState(
                    "failed",
                    "deadline_exceeded",
                    f"the Kubernetes Job ran past activeDeadlineSeconds "
                    f"({self.settings.k8s_active_deadline_s}s)",
                    retryable=False,
                )
        return self._pod_state(job, k8s_job)

    def _pod_state(self, job: JobRow, k8s_job: Any) -> RunnerState:
        pods = self._pods(job)
        for pod in pods:
            failure = _pod_failure(pod)
            if failure is not None:
                return failure
        status = k8s_job.status
        if status is not None and (status.succeeded or status.failed) and not status.active:
            return RunnerState("exited", detail="the runner pod exited")
        if pods and all((p.status.phase if p.status else "Pending") == "Pending" for p in pods):
            return RunnerState("pending")
        if not pods:
            return RunnerState("pending")
        return RunnerState("running")

    def _pods(self, job: JobRow) -> list[Any]:
        selector = f"{JOB_ID_LABEL}={job.id},{ATTEMPT_LABEL}={job.attempts}"
        result = self._core().list_namespaced_pod(
            self.settings.k8s_namespace, label_selector=selector
        )
        return list(result.items or [])

    def cancel(self, job: JobRow) -> None:
        if not job.runner_ref:
            return
        try:
            self._batch().delete_namespaced_job(
                job.runner_ref, self.settings.k8s_namespace, propagation_policy="Background"
            )
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise

    def logs(self, job: JobRow, tail: int | None = None) -> str | None:
        try:
            pods = self._pods(job)
            if not pods:
                return None
            kwargs = {"tail_lines": tail} if tail is not None else {}
            text = self._core().read_namespaced_pod_log(
                pods[-1].metadata.name, self.settings.k8s_namespace, **kwargs
            )
        except Exception as exc:
            log.warning("cannot read logs of job %s: %s", job.id, exc)
            return None
        return tail_lines(str(text), tail)

    def close(self) -> list[tuple[str, str]]:
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()
        return []


def _toleration(raw: dict[str, str]) -> dict[str, Any]:
    keys = {"key": "key", "operator": "operator", "value": "value", "effect": "effect"}
    out: dict[str, Any] = {keys[k]: v for k, v in raw.items() if k in keys}
    if "tolerationSeconds" in raw:
        out["toleration_seconds"] = int(raw["tolerationSeconds"])
    return out


def _pod_failure(pod: Any) -> RunnerState | None:
    """A platform-level failure of one pod, or None."""
    status = pod.status
    if status is None:
        return None
    if status.reason == "Evicted":
        return RunnerState("failed", "pod_evicted", status.message or "the pod was evicted")
    for cs in status.container_statuses or []:
        state = cs.state
        waiting = state.waiting if state else None
        if waiting is not None and waiting.reason in IMAGE_PULL_ERRORS:
            detail = f"{waiting.reason}: {(waiting.message or '')[:200]}".rstrip(": ")
            return RunnerState("failed", "image_pull_failed", detail, retryable=False)
        if waiting is not None and waiting.reason in CONFIG_ERRORS:
            detail = f"{waiting.reason}: {(waiting.message or '')[:200]}".rstrip(": ")
            return RunnerState("failed", "pod_config_error", detail, retryable=False)
        terminated = state.terminated if state else None
        if terminated is not None and terminated.reason == "OOMKilled":
            return RunnerState(
                "failed",
                "oom_killed",
                "the runner was killed for using more memory than its limit (OOMKilled)",
                retryable=False,
            )
    return None
