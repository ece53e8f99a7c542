"""Settings of the training API and the job runners it launches."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from service.config.common import DEFAULT_VAR, CommonSettings


class TrainingSettings(CommonSettings):
    """The training API and the job runners it launches."""

    database_url: str = Field(
        default=f"sqlite:///{(DEFAULT_VAR / 'scantune.db').resolve()}",
        description="Job store: SQLAlchemy URL (sqlite:///file or postgresql+psycopg://...).",
    )
    work_dir: Path = Field(
        default=(DEFAULT_VAR / "jobs").resolve(),
        description="Per-job folders: checkpoints, logs and the run's outputs before publishing.",
    )
    launcher: Literal["local", "kubernetes"] = Field(
        default="local", description="How jobs run: a local subprocess or a Kubernetes Job."
    )
    max_concurrent_jobs: int = Field(
        default=1, ge=1, description="Local launcher: jobs running at once; the rest wait queued."
    )
    heartbeat_interval_s: float = Field(default=5.0, gt=0, description="Runner heartbeat period.")
    heartbeat_timeout_s: float = Field(
        default=60.0, gt=0, description="A running job silent this long is considered dead."
    )
    runner_start_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A launched runner that has not reported at all this long is considered dead"
            " (covers interpreter start-up and image pulls; heartbeat_timeout_s applies after)."
        ),
    )
    max_retries: int = Field(
        default=2,
        ge=0,
        description="Times a dead job is resumed from its checkpoint before failing.",
    )
    supervisor_interval_s: float = Field(
        default=2.0, gt=0, description="How often the API starts queued jobs and reaps dead ones."
    )
    weights_dir: Path | None = Field(
        default=None,
        description=(
            "Folder of torchvision weight files named <base_model>.pth, used when a job"
            " gives no weights_uri."
        ),
    )
    local_data_roots: list[Path] = Field(
        default_factory=list,
        description=(
            "JSON list of folders that submitted jobs' local dataset and weights paths must lie"
            " under (symlinks resolved). Default none: only s3:// URIs under s3_data_prefixes."
        ),
    )
    s3_data_prefixes: list[str] = Field(
        default_factory=list,
        description=(
            "JSON list of s3:// prefixes jobs may read data and weights from, e.g."
            ' ["s3://scans/teams/"]. Default none.'
        ),
    )
    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "JSON list of host names (or IPs) a job's webhook may call even though they resolve"
            " to a loopback, private, link-local or metadata address (refused otherwise)."
        ),
    )
    webhook_ca_pem: str | None = Field(
        default=None,
        description=(
            "PEM text of CA certificates an HTTPS webhook's certificate may also chain to (a"
            " hospital's internal CA), besides the public ones; the host name is still checked."
        ),
    )

    @field_validator("webhook_ca_pem")
    @classmethod
    def _loadable_pem(cls, value: str | None) -> str | None:
        if value:
            from service.jobs.egress import tls_context

            try:
                tls_context(value)
            except ValueError as exc:
                raise ValueError(f"not PEM CA certificates: {exc}") from None
        return value or None

    # Clients and ownership, limits (issue 24)
    model_grants: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "JSON object client -> model-name patterns (fnmatch) it may publish to besides the"
            ' models it owns (first published by it), e.g. {"ci": ["chest-*"]}.'
        ),
    )
    models_private: bool = Field(
        default=False,
        description=(
            "Publish versions private to the job's client (and admin keys) unless the job spec"
            " says `access: {private: false}`; default shared, every key sees every model."
        ),
    )
    max_jobs_per_client: int = Field(
        default=4, ge=1, description="Jobs of one client running at once; the rest wait queued."
    )
    max_gpus_per_job: int = Field(default=1, ge=0, description="GPUs one job may ask for.")
    job_volume_limit: str = Field(
        default="50Gi",
        pattern=r"^[0-9]+(Mi|Gi)$",
        description="Kubernetes launcher: size limit of a job pod's work volume.",
    )
    webhook_secret: str | None = Field(
        default=None,
        description=(
            "Standard Webhooks signing secret (whsec_<base64>, or any string, used as its"
            " bytes); deliveries carry webhook-id, webhook-timestamp and webhook-signature."
        ),
    )
    webhook_retries: int = Field(default=4, ge=0, description="Webhook delivery retries.")
    webhook_backoff_s: float = Field(
        default=1.0, ge=0, description="First webhook retry delay; doubles on each retry."
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="Time limit of one webhook delivery attempt."
    )
    # Kubernetes launcher
    k8s_namespace: str = Field(default="default", description="Namespace the Jobs are created in.")
    k8s_image: str = Field(default="scantune-trainer:latest", description="Trainer image.")
    k8s_service_account: str | None = Field(
        default=None, description="Service account of job pods."
    )
    k8s_env_secret: str | None = Field(
        default=None, description="Secret whose keys become the job pod's environment."
    )
    k8s_node_selector: dict[str, str] = Field(
        default_factory=dict, description="JSON object: node labels job pods must match."
    )
    k8s_tolerations: list[dict[str, str]] = Field(
        default_factory=list, description="JSON list of pod tolerations (e.g. for GPU taints)."
    )
    k8s_gpu_resource: str = Field(default="nvidia.com/gpu", description="GPU resource name.")
    k8s_run_as_user: int = Field(
        default=10001, ge=1, description="Non-root uid of job pods: the trainer image's user."
    )
    k8s_run_as_group: int = Field(
        default=10001, ge=0, description="Group (and fsGroup) of job pods: the image's group."
    )
    k8s_backoff_limit: int = Field(default=0, ge=0, description="Pod retries inside a Job.")
    k8s_active_deadline_s: int = Field(
        default=6 * 3600,
        gt=0,
        description="Time limit of one attempt's Job; a pod ended by it fails the job.",
    )
    k8s_ttl_after_finished_s: int = Field(default=3600, ge=0, description="Job cleanup delay.")
    k8s_in_cluster: bool = Field(
        default=True, description="Load in-cluster config; else the local kubeconfig."
    )
    k8s_kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file when not in cluster; default: $KUBECONFIG or ~/.kube/config.",
    )
    # Dashboard (issue 25): where "Try a scan" forwards predictions
    inference_url: str | None = Field(
        default=None,
        description=(
            "Base URL of the inference service that the dashboard's Try page forwards scans to"
            " (with the user's own key); unset: the Try page says it is not configured."
        ),
    )
    dicom_node_url: str | None = Field(
        default=None,
        description=(
            "Base URL of the DICOM node whose series the dashboard's DICOM page shows (its"
            " requests relayed with the user's own key); unset: the page says it is not"
            " configured."
        ),
    )
    outcomes_signed_only: bool = Field(
        default=False,
        description="Refuse a reported outcome without a valid signature of what the version"
        " answered (needs prediction_signing_key); default: unsigned ones are taken, counted.",
    )

    @model_validator(mode="after")
    def _signed_needs_a_key(self) -> TrainingSettings:
        if self.outcomes_signed_only and self.prediction_signing_key is None:
            raise ValueError("outcomes_signed_only needs prediction_signing_key to check them")
        return self
