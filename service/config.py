"""All settings, read from `SCANTUNE_*` environment variables, in one place.

One settings class per process: `TrainingSettings` for the training API and its job runners,
`InferenceSettings` for the inference service. Both are read once in `create_app` / `main`
and passed down; nothing reads `os.environ` at import time.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from service.errors import validation_errors
from service.hospital.results import DEFAULT_DISCLAIMER

DEFAULT_VAR = Path("var")


class ApiKey(BaseModel):
    """One API key as stored in settings: never the key itself, only its SHA-256."""

    name: str = Field(description="Who holds the key; recorded as the actor of changes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key.")
    scopes: list[Literal["read", "jobs:write", "models:write", "predict", "admin"]]
    # Clients and ownership (issue 24)
    client: str = Field(
        default="",
        max_length=255,
        description=(
            "The client (team, system) the key belongs to: it sees and cancels only its own"
            " jobs unless the key has the admin scope. Empty: the key's name."
        ),
    )

    @property
    def owner(self) -> str:
        """The client this key acts for."""
        return self.client or self.name


class CommonSettings(BaseSettings):
    """Settings both services share: artifact store, S3, auth, limits."""

    model_config = SettingsConfigDict(env_prefix="SCANTUNE_", extra="ignore")

    artifact_uri: str = Field(
        default=f"file://{(DEFAULT_VAR / 'artifacts').resolve()}",
        description="Where published models live: file:///path or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto...); None means AWS."
    )
    s3_region: str | None = Field(default=None, description="S3 region; default from AWS config.")
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description='JSON list of {"name", "sha256", "scopes"}; `scantune keys new` makes one.',
    )
    auth_disabled: bool = Field(
        default=False,
        description="Serve without API keys. Only for local use; never in production.",
    )
    max_upload_mb: float = Field(default=32.0, gt=0, description="Largest request body accepted.")
    log_level: str = Field(default="INFO", description="Python logging level name.")
    # Security: rate limits, structured logs, audit (issue 24)
    rate_limits: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'JSON object: per-client limits by action, e.g. {"predict": "50/second", "jobs":'
            ' "20/hour"} (the `limits` notation); an action not named is not limited.'
        ),
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db shared by workers and replicas for the rate limits.",
    )
    rate_limit_prefix: str = Field(
        default="scantune", description="Key prefix of the rate limits' counters in Redis."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description=(
            "json: one JSON object a line (timestamp, level, logger, request_id, message);"
            " text: for a person; auto: text at a terminal, else json."
        ),
    )

    @field_validator("rate_limits")
    @classmethod
    def _known_limits(cls, value: dict[str, str]) -> dict[str, str]:
        from limits import parse

        for action, text in value.items():
            if action not in ("predict", "jobs"):
                raise ValueError(f"unknown action {action!r}: use predict or jobs")
            parse(text)  # ValueError names what is wrong with the notation
        return value

    audit_salt: str = Field(
        default="",
        description="Salt of the hashes that stand for study UIDs in audit records.",
    )


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
    # Clients and ownership, limits (issue 24)
    model_grants: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "JSON object client -> model-name patterns (fnmatch) it may publish to besides the"
            ' models it owns (first published by it), e.g. {"ci": ["chest-*"]}.'
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
    k8s_active_deadline_s: int = Field(default=6 * 3600, gt=0, description="Job time limit.")
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


class InferenceSettings(CommonSettings):
    """The inference service."""

    preload_models: list[str] = Field(
        default_factory=list,
        description=(
            'JSON list of "name", "name@alias" or "name:version" loaded at start;'
            " /readyz is false until they are."
        ),
    )
    default_alias: str = Field(default="production", description="Alias used when none is given.")
    cache_size: int = Field(default=4, ge=1, description="ONNX sessions kept in memory (LRU).")
    alias_poll_interval_s: float = Field(
        default=5.0, gt=0, description="How often aliases are re-read to pick up promotions."
    )
    max_batch_size: int = Field(
        default=1,
        ge=1,
        description=(
            "Micro-batching (gthread layout): largest batch of concurrent requests. 1 suits CPU"
            " runners (a single-threaded session costs the same per image at any batch size);"
            " raise it for a GPU."
        ),
    )
    max_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="Micro-batching (gthread layout): longest a request waits for company.",
    )
    max_files: int = Field(default=64, ge=1, description="Scans accepted in one request.")
    max_request_megapixels: float = Field(
        default=256.0,
        gt=0,
        description=(
            "Decoded pixels one request may hold, all its scans together (413 past it): a few"
            " kB of PNG can declare 64 MP, a second of decoding and 256 MB of float32 each."
        ),
    )
    ort_intra_op_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "onnxruntime threads of the all-core session (lone requests, or the only runner);"
            " 0: the cores this process may use (CPU affinity, capped by a cgroup CPU quota)."
        ),
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="onnxruntime execution providers in order, e.g. CUDAExecutionProvider first.",
    )
    batch_runners: int = Field(
        default=0,
        ge=0,
        description=(
            "For one threaded (gthread) worker per machine, as on a GPU: the micro-batcher's"
            " runner threads per model, each running batches on a single-threaded session"
            " (0: one per core); a lone request uses an all-core session instead. 1: one"
            " all-core session. Not used by the CPU default, one sync worker per core"
            " (service.cores), where each worker runs a single-threaded session, or the"
            " all-core one while the others are idle."
        ),
    )
    # Deprecated setting name: SCANTUNE_ORT_LANES, read as SCANTUNE_BATCH_RUNNERS
    ort_lanes: int | None = Field(
        default=None,
        ge=0,
        description="Deprecated: the old name of SCANTUNE_BATCH_RUNNERS, used when it is unset.",
    )
    ort_cpu_mem_arena: bool = Field(
        default=True,
        description=(
            "onnxruntime's CPU memory arena: a worker's memory stays flat at the peak that"
            " max_batch_size and the runners need. Off, activations go back to malloc (lower"
            " floor, but resident memory fluctuates with fragmentation)."
        ),
    )
    ort_arena_keep_batch: int = Field(
        default=8,
        ge=1,
        description=(
            "Largest onnxruntime run, in images, whose CPU arena memory a session keeps for"
            " the next runs (never less than max_batch_size). A bigger run, a request with more"
            " files, gives its memory back when it ends, at 5-7 ms more CPU per image of that"
            " run (bench/arena.py); kept, one 64-file request left a worker 910 MB larger for"
            " good (EfficientNet-Lite0, 224 px)."
        ),
    )
    malloc_arena_max: int = Field(
        default=2,
        ge=0,
        description=(
            "glibc malloc arenas per worker process (0: glibc's default, 8 per core). Each"
            " request thread otherwise grows its own arena and resident memory creeps up."
        ),
    )
    ort_allow_spinning: bool = Field(
        default=False,
        description=(
            "Let onnxruntime's idle threads spin; off leaves the cores to decoding and other"
            " workers when several share a machine."
        ),
    )
    model_load_wait_s: float = Field(
        default=5.0,
        ge=0,
        description=(
            "How long a request waits for a model another thread is loading before a 503 with"
            " Retry-After."
        ),
    )
    dicom_decoders: int = Field(
        default=0,
        ge=0,
        description=(
            "JPEG Lossless and JPEG-LS decoder processes (GDCM's sealed helpers) per worker, at"
            " most; 0: one per core. One starts for each such scan decoded while the others"
            " are busy, so a sync worker keeps one, and a gthread worker's threads decode side"
            " by side; each holds about 90 MB while idle, up to 1.4 GB while it decodes a"
            " 64 MP colour frame."
        ),
    )

    # Hospital formats (issue 22): DICOM SR and FHIR answers, scans fetched by DICOMweb.
    dicom_uid_root: str | None = Field(
        default=None,
        pattern=r"^[12](\.(0|[1-9][0-9]*))+$",
        max_length=24,
        description=(
            "The organisation's UID root for the SRs this service writes (series and"
            " instance UIDs); none: UUID-derived 2.25 UIDs."
        ),
    )
    result_disclaimer: str = Field(
        default=DEFAULT_DISCLAIMER,
        max_length=1024,
        description=(
            "Statement in every SR and FHIR report that the result is an automated one; empty"
            " only where the deployment is cleared for diagnostic use."
        ),
    )
    dicomweb_url: str | None = Field(
        default=None,
        description=(
            'DICOMweb root of the PACS that predict bodies {"dicomweb": ...} fetch from and'
            " ?store=true stores SRs to; none: both are off (422)."
        ),
    )
    dicomweb_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Connect and read timeout of DICOMweb requests."
    )
    dicomweb_token: SecretStr | None = Field(default=None, description="Bearer token.")
    dicomweb_token_file: Path | None = Field(
        default=None, description="File holding the bearer token (a mounted secret)."
    )
    dicomweb_username: str | None = Field(default=None, description="Basic auth user.")
    dicomweb_password: SecretStr | None = Field(default=None, description="Basic auth password.")
    dicomweb_password_file: Path | None = Field(
        default=None, description="File holding the basic auth password (a mounted secret)."
    )

    @model_validator(mode="after")
    def _runners_from_the_deprecated_name(self) -> InferenceSettings:
        if self.ort_lanes is not None and "batch_runners" not in self.model_fields_set:
            self.batch_runners = self.ort_lanes
        return self


def describe_settings_error(exc: ValidationError | SettingsError) -> str:
    """One line naming each bad environment variable and what is wrong with it; never the
    value, which may be a secret (a database URL with its password)."""
    prefix = CommonSettings.model_config.get("env_prefix", "")
    if isinstance(exc, SettingsError):  # a value that is not even JSON, for a list or a dict
        match = re.search(r'field "(\w+)"', str(exc))
        field = match.group(1).upper() if match else "?"
        return f"{prefix}{field}: {exc.__cause__ or exc}"
    parts = []
    for error in validation_errors(exc, location="")[:5]:  # "/field/inside/..."
        field, *inside = error["loc"].removeprefix("/").split("/")
        where = f" (at {'.'.join(inside)})" if inside else ""
        parts.append(f"{prefix}{(field or '?').upper()}{where}: {error['msg']}")
    return "; ".join(parts)


S = TypeVar("S", bound=CommonSettings)


def settings_or_exit(settings_class: type[S], log: Any, service: str) -> S:
    """The settings from the environment; on a bad value, one error line naming the variable
    (not a traceback) and exit 2. gunicorn's master calls it before it forks, so a bad value
    does not make every worker fail to boot with its own traceback."""
    try:
        return settings_class()
    except (ValidationError, SettingsError) as exc:
        log.error("scantune %s: invalid settings: %s", service, describe_settings_error(exc))
        raise SystemExit(2) from None


# --- DICOM node (issue 23): `scantune serve dicom` ------------------------------------------

from service.dicom_node.peers import DicomCaller, DicomDestination, DicomRoute  # noqa: E402


class DicomNodeSettings(CommonSettings):
    """The DICOM node: Storage SCP, STOW-RS, the durable work queue and result delivery."""

    database_url: str = Field(
        default=f"sqlite:///{(DEFAULT_VAR / 'scantune.db').resolve()}",
        description="The work queue's database: the job store's (SQLAlchemy URL).",
    )
    dicom_ae_title: str = Field(
        default="SCANTUNE", min_length=1, max_length=16, description="The node's AE title."
    )
    dicom_port: int = Field(default=11112, ge=0, le=65535, description="DICOM (DIMSE) port.")
    dicom_bind_host: str = Field(
        default="127.0.0.1", description="Address the DICOM port binds; 0.0.0.0 to open it."
    )
    dicom_allowed_callers: list[DicomCaller] = Field(
        default_factory=list,
        description='JSON list of {"ae_title", "host"} that may associate; empty: nobody.',
    )
    dicom_routes: list[DicomRoute] = Field(
        default_factory=list,
        description="JSON list of routing rules; a series no rule matches is dropped, counted.",
    )
    dicom_destinations: list[DicomDestination] = Field(
        default_factory=list, description="JSON list of where each result (the SR) is sent."
    )
    dicom_series_quiet_s: float = Field(
        default=5.0, gt=0, description="A series is complete after this long without a new one."
    )
    dicom_spool_dir: Path = Field(
        default=(DEFAULT_VAR / "dicom").resolve(),
        description="Received instances and results until delivered (encrypt the volume).",
    )
    dicom_retention_h: float = Field(
        default=72.0, gt=0, description="Undelivered work older than this is deleted, counted."
    )
    dicom_retry_first_s: float = Field(
        default=2.0, gt=0, description="First retry delay of a failed step; doubles each time."
    )
    dicom_retry_max_s: float = Field(
        default=300.0, gt=0, description="Longest delay between retries of a failed step."
    )
    dicom_uid_root: str | None = Field(
        default=None,
        pattern=r"^[12](\.(0|[1-9][0-9]*))+$",
        max_length=24,
        description="UID root of the results (as for inference's SRs); none: 2.25 UIDs.",
    )
    result_disclaimer: str = Field(
        default=DEFAULT_DISCLAIMER,
        max_length=1024,
        description="Statement in every SR that the result is automated (as for inference).",
    )
    dicom_classify_concurrency: int = Field(
        default=2, ge=1, description="Series classified at once (requests to inference)."
    )
    inference_url: str = Field(
        default="http://127.0.0.1:8001", description="The inference service that classifies."
    )
    dicom_inference_api_key: str | None = Field(
        default=None, description="The node's own API key (scope predict) for inference."
    )
    dicom_inference_timeout_s: float = Field(
        default=60.0, gt=0, description="Time limit of one classification request."
    )
