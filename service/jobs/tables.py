"""The job store's tables (SQLAlchemy 2 ORM); the schema itself is made by the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """Datetimes from SQLite come back naive; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (0 where the driver does not say)."""
    return int(getattr(result, "rowcount", 0) or 0)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    """One training job; `seq` orders jobs by creation (cursor pagination), `id` names them."""

    __tablename__ = "jobs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, nullable=False)
    model_name: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)
    spec_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(
        String(255), unique=True, doc="SHA-256 of the client and its Idempotency-Key header."
    )
    status: Mapped[str] = mapped_column(String(16), index=True, nullable=False)
    phase: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(default=0.0, nullable=False)
    epoch: Mapped[int | None] = mapped_column(Integer)
    epochs: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(Integer, doc="Optimizer step within the epoch.")
    steps: Mapped[int | None] = mapped_column(Integer, doc="Optimizer steps of one epoch.")
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    best_metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list, nullable=False)
    error_reason: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    pauses: Mapped[int] = mapped_column(
        Integer,
        default=0,
        nullable=False,
        doc="Attempts that ended paused by their service stopping; not counted as failures.",
    )
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    launcher: Mapped[str | None] = mapped_column(String(16))
    runner_ref: Mapped[str | None] = mapped_column(
        String(255), doc="Local process id, or the Kubernetes Job's name."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int | None] = mapped_column(Integer)
    artifacts: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    promotion: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    webhook_state: Mapped[str | None] = mapped_column(
        String(16), doc="None (no webhook), pending, sending, delivered or failed."
    )
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    webhook_claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)
    client: Mapped[str] = mapped_column(
        String(255), index=True, nullable=False, doc="The owning client; it alone sees the job."
    )


class ModelVersionRow(Base):
    """A version number taken by a job; the unique pair makes numbers gap- and duplicate-free."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_name", "version", name="uq_model_versions"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AuditRow(Base):
    """One audit record; rows are only ever inserted (service.audit)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True, nullable=False)
    client: Mapped[str] = mapped_column(String(255), index=True, nullable=False)
    action: Mapped[str] = mapped_column(String(32), index=True, nullable=False)
    target: Mapped[str] = mapped_column(String(255), nullable=False)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    request_id: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False)


class OutcomeRow(Base):
    """A confirmed diagnosis a client reported for a scan a version classified: the version's
    probabilities and the true class. No scan data: the client's reference for the scan is
    kept only as a salted hash, so that a corrected report replaces the first."""

    __tablename__ = "model_outcomes"
    __table_args__ = (
        UniqueConstraint("model_name", "version", "client", "reference", name="uq_model_outcomes"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    client: Mapped[str] = mapped_column(String(255), nullable=False, doc="Who reported it.")
    reference: Mapped[str] = mapped_column(String(64), nullable=False, doc="Salted hash.")
    label: Mapped[str] = mapped_column(String(128), nullable=False, doc="The true class.")
    probabilities: Mapped[dict[str, float]] = mapped_column(JsonType, nullable=False)
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
