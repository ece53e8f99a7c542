"""Response schemas of the jobs API: `JobView`, a job as clients see it, and its parts;
`JobView.model_dump(mode="json")` is the response body. `JobCheck`: a dry run's answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.jobs.tables import JobRow, as_utc


class JobError(BaseModel):
    reason: str = Field(description="Machine-readable cause, e.g. data_error, runner_lost.")
    detail: str = Field(description="One or two sentences for a person; never a traceback.")


class Artifacts(BaseModel):
    version: int
    card_uri: str | None = None
    onnx_uri: str | None = None
    onnx_sha256: str | None = None
    uris: dict[str, str] = Field(default_factory=dict, description="Every published file.")


class Promotion(BaseModel):
    alias: str
    passed: bool
    reason: str
    figures: dict[str, Any] = Field(default_factory=dict)


class WebhookStatus(BaseModel):
    delivered: bool
    attempts: int = 0
    last_error: str | None = None
    state: str = Field(description="pending, sending, delivered or failed.")


ModelStanding = Literal["new", "owned", "granted"]


class JobCheck(BaseModel):
    """A spec the service would accept (`POST /v1/training-jobs?dry_run=true`): nothing queued."""

    dry_run: Literal[True] = True
    model_name: str
    model: ModelStanding = Field(
        description="new: no version published yet, the job's client would own it; owned: the"
        " client's; granted: another client's, published to under SCANTUNE_MODEL_GRANTS."
    )
    spec: dict[str, Any] = Field(description="The spec as the job would store it: defaults filled.")


class JobView(BaseModel):
    id: str
    model_name: str
    status: str
    phase: str | None
    progress: float = Field(ge=0.0, le=1.0)
    epoch: int | None
    epochs: int | None
    step: int | None = Field(default=None, description="Optimizer step within the epoch.")
    steps: int | None = Field(default=None, description="Optimizer steps of one epoch.")
    metrics: dict[str, Any] | None = Field(description="Latest validation metrics.")
    best_metrics: dict[str, Any] | None
    history: list[dict[str, Any]] = Field(description="One entry per finished epoch.")
    spec: dict[str, Any]
    attempts: int
    pauses: int = Field(
        description=(
            "Attempts that ended paused because the service stopped; the job resumed from its"
            " checkpoint, and they do not count against SCANTUNE_MAX_RETRIES."
        )
    )
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    created_by: str
    client: str = Field(description="The client that owns the job: only it (or an admin) sees it.")
    artifacts: Artifacts | None
    promotion: Promotion | None
    webhook: WebhookStatus | None

    @classmethod
    def from_row(cls, row: JobRow) -> JobView:
        error = (
            JobError(reason=row.error_reason, detail=row.error_detail or "")
            if row.error_reason
            else None
        )
        webhook = None
        if row.webhook_state is not None:
            outcome = row.webhook or {}
            webhook = WebhookStatus(
                delivered=row.webhook_state == "delivered",
                attempts=int(outcome.get("attempts", 0)),
                last_error=outcome.get("last_error"),
                state=row.webhook_state,
            )
        return cls(
            id=row.id,
            model_name=row.model_name,
            status=row.status,
            phase=row.phase,
            progress=min(max(row.progress or 0.0, 0.0), 1.0),
            epoch=row.epoch,
            epochs=row.epochs,
            step=row.step,
            steps=row.steps,
            metrics=row.metrics,
            best_metrics=row.best_metrics,
            history=list(row.history or []),
            spec=row.spec,
            attempts=row.attempts,
            pauses=row.pauses,
            error=error,
            created_at=as_utc(row.created_at),  # type: ignore[arg-type]
            started_at=as_utc(row.started_at),
            finished_at=as_utc(row.finished_at),
            heartbeat_at=as_utc(row.heartbeat_at),
            created_by=row.created_by,
            client=row.client,
            artifacts=Artifacts.model_validate(row.artifacts) if row.artifacts else None,
            promotion=Promotion.model_validate(row.promotion) if row.promotion else None,
            webhook=webhook,
        )
