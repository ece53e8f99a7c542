"""Settings of the inference service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from models.card import ALIAS_PATTERN
from service.config.common import CommonSettings
from service.hospital.results import DEFAULT_DISCLAIMER


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
    shadow_alias: str | None = Field(
        default="shadow",
        pattern=r"^$|" + ALIAS_PATTERN,
        description="The alias naming a model's version in shadow: after each answer of"
        " another version, it classifies the same scans in the background, for the metrics"
        " only (agreement, classes). Empty: no shadows.",
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
    dicomweb_deadline_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="Longest a whole fetch from the DICOMweb server may take (504 after it),"
        " however slowly the server sends.",
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
