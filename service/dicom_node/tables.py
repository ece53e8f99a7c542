"""The node's durable work queue (SQLAlchemy 2 ORM, in the job store's database; the schema is
made by the migration `dicom_node_queue` in service/jobs/migrations).

A *series* row is one unit of work: the instances of one series received until it fell quiet,
the model a route chose for it, the result (SR) made from them, and its state:
receiving -> classifying -> delivering -> done (or rejected, by a destination), or unrouted /
failed / expired; recalled (`dicom_recalls`) and purged (`dicom_purges`) from any of them.
A *delivery* row is one result on its way to one destination.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from service.jobs.tables import Base

PENDING_STATES = ("receiving", "classifying", "delivering")


class SeriesRow(Base):
    __tablename__ = "dicom_series"
    __table_args__ = (
        UniqueConstraint("series_uid", "generation", name="uq_dicom_series_generation"),
        Index("ix_dicom_series_state", "state"),
        Index("ix_dicom_series_model_version", "model", "version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    series_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    generation: Mapped[int] = mapped_column(
        Integer, nullable=False, doc="1, or more for instances sent after a result was made."
    )
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    calling_ae: Mapped[str] = mapped_column(String(16), nullable=False)
    model: Mapped[str | None] = mapped_column(String(64))
    alias: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[int | None] = mapped_column(
        Integer, doc="The model version that classified it (a recall finds its results)."
    )
    destinations: Mapped[str | None] = mapped_column(
        Text, doc="JSON list of the keys of the destinations its route chose; None: all."
    )
    result_uid: Mapped[str | None] = mapped_column(
        String(64), unique=True, doc="SOP Instance UID of the SR: a result's identity."
    )
    result_file: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_instance_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class InstanceRow(Base):
    __tablename__ = "dicom_instances"
    __table_args__ = (UniqueConstraint("series_id", "sop_instance_uid", name="uq_dicom_instance"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(
        ForeignKey("dicom_series.id", ondelete="CASCADE"), index=True, nullable=False
    )
    sop_instance_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    sop_class_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    file: Mapped[str | None] = mapped_column(
        String(255), doc="Name in the spool folder; None once deleted."
    )
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class DeliveryRow(Base):
    __tablename__ = "dicom_deliveries"
    __table_args__ = (
        UniqueConstraint("series_id", "destination", name="uq_dicom_delivery"),
        Index("ix_dicom_deliveries_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(
        ForeignKey("dicom_series.id", ondelete="CASCADE"), nullable=False
    )
    destination: Mapped[str] = mapped_column(String(255), nullable=False)
    state: Mapped[str] = mapped_column(
        String(16),
        nullable=False,
        doc="pending, done, rejected, expired; skipped, recalled, purged (never sent).",
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_error: Mapped[str | None] = mapped_column(String(255))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OrderRow(Base):
    """An order from the RIS (HL7 ORM^O01 or OMI^O23): fetch the studies of its accession
    number from the order source once the PACS has them. waiting -> fetched, or cancelled /
    expired."""

    __tablename__ = "dicom_orders"
    __table_args__ = (Index("ix_dicom_orders_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    accession: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_error: Mapped[str | None] = mapped_column(String(255))
    studies: Mapped[str | None] = mapped_column(Text, doc="JSON list of the studies fetched.")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RetrievalRow(Base):
    """A retrieval run in the background (`POST /v1/retrievals` with `wait: false`): the
    study (or series, or accession number) asked of a source, and what became of it.
    running -> done, not_found or failed."""

    __tablename__ = "dicom_retrievals"
    __table_args__ = (Index("ix_dicom_retrievals_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    study_uid: Mapped[str | None] = mapped_column(String(64))
    series_uid: Mapped[str | None] = mapped_column(String(64))
    accession: Mapped[str | None] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(255), nullable=False, doc="Who asked.")
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    studies: Mapped[str | None] = mapped_column(Text, doc="JSON list of the studies found.")
    completed: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    failed: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    warning: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutcomeRow(Base):
    """A scan the node classified with a model whose outcomes the site reports
    (`dicom_outcome_codes`), waiting for the RIS's final report of its exam; then the class
    the report confirmed, on its way to the training service. waiting -> pending -> sent, or
    refused (the training service said no); deleted `dicom_outcome_wait_h` after it came."""

    __tablename__ = "dicom_outcomes"
    __table_args__ = (
        UniqueConstraint("model", "version", "reference", name="uq_dicom_outcome"),
        Index("ix_dicom_outcomes_accession", "accession"),
        Index("ix_dicom_outcomes_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    accession: Mapped[str] = mapped_column(String(64), nullable=False)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    reference: Mapped[str] = mapped_column(
        String(80), nullable=False, doc="What the scan is reported as: a hash of its SOP UID."
    )
    probabilities: Mapped[str] = mapped_column(Text, nullable=False, doc="JSON, as answered.")
    signature: Mapped[str | None] = mapped_column(
        String(80), doc="Inference's signature of the answer (with a prediction signing key)."
    )
    label: Mapped[str | None] = mapped_column(String(128), doc="The class the report confirmed.")
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reported_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When the final report (or its correction) came."
    )


class ExamReportRow(Base):
    """The newest final report (or correction) of an exam, as the codes it names: scans of it
    classified after it came (an exam reported before the node had it, a late series) are
    labelled by it too. Deleted `dicom_outcome_wait_h` after it came."""

    __tablename__ = "dicom_exam_reports"
    __table_args__ = (UniqueConstraint("accession", name="uq_dicom_exam_report"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    accession: Mapped[str] = mapped_column(String(64), nullable=False)
    codes: Mapped[str] = mapped_column(Text, nullable=False, doc="JSON: its coded findings.")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class RecallRow(Base):
    """A model version recalled at the node (`POST /v1/recalls`): its results not yet sent
    are stopped, and each one delivered is withdrawn from its destination. new -> applied
    (by the queue worker, which alone sends, so that no result goes out after it) -> lifted
    (`POST /v1/recalls/{id}/lift`: the version's later results go out again) -> new (the
    version recalled again: the same row, one per version)."""

    __tablename__ = "dicom_recalls"
    __table_args__ = (UniqueConstraint("model", "version", name="uq_dicom_recall"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(255), nullable=False)
    requested_by: Mapped[str] = mapped_column(String(255), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    stopped: Mapped[int] = mapped_column(
        Integer, default=0, nullable=False, doc="Deliveries stopped before they went."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lifted_by: Mapped[str | None] = mapped_column(String(255))
    lift_reason: Mapped[str | None] = mapped_column(String(255))


class WithdrawalRow(Base):
    """A delivered result of a recalled version, on its way to being withdrawn from its
    destination (an IOCM rejection note, an HL7 correction, FHIR entered-in-error): pending
    -> done, rejected (refused), expired (past the retention limit); not_kept when the
    result was deleted before the recall (`dicom_recall_keep_h`): a person must act. It keeps
    the reason of the recall that made it: a lifted recall made anew takes another reason."""

    __tablename__ = "dicom_withdrawals"
    __table_args__ = (
        UniqueConstraint("series_id", "destination", name="uq_dicom_withdrawal"),
        Index("ix_dicom_withdrawals_state", "state"),
        Index("ix_dicom_withdrawals_recall", "recall_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recall_id: Mapped[int] = mapped_column(
        ForeignKey("dicom_recalls.id", ondelete="CASCADE"), nullable=False
    )
    series_id: Mapped[int] = mapped_column(
        ForeignKey("dicom_series.id", ondelete="CASCADE"), nullable=False
    )
    destination: Mapped[str] = mapped_column(String(255), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_error: Mapped[str | None] = mapped_column(String(255))
    # None only in a row made during an upgrade by a node of the release before: its recall's
    # reason stands in
    reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PurgeRow(Base):
    """A study the node was sent by mistake, forgotten (`POST /v1/purges`): new -> done, by
    the queue worker, which alone sends, so that nothing of the study goes out after it. It
    names the study only by its salted hash (`service.audit.hash_uid`, as audit records do);
    what the purge did is kept with it, the deliveries made before it above all: the node
    cannot take those back, a person must act where they went. Unless asked not to, it blocks
    the study from then on (`purge_blocks`): its instances sent again are dropped, until the
    purge is released (`POST /v1/purges/{id}/release`)."""

    __tablename__ = "dicom_purges"
    __table_args__ = (Index("ix_dicom_purges_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(String(255), nullable=False)
    requested_by: Mapped[str] = mapped_column(String(255), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    counts: Mapped[str | None] = mapped_column(
        Text, doc="JSON: what it stopped, deleted and forgot (`purges.Counts`); None until done."
    )
    delivered: Mapped[str | None] = mapped_column(
        Text, doc="JSON: the results delivered before it, by destination; None until done."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    blocked: Mapped[bool] = mapped_column(
        Boolean, nullable=False, doc="Whether it blocks the study (asked with `block`)."
    )
    released_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When its block ended; None: it blocks (if `blocked`)."
    )
    released_by: Mapped[str | None] = mapped_column(String(255))
    released_reason: Mapped[str | None] = mapped_column(String(255))
    dropped: Mapped[int] = mapped_column(
        Integer, default=0, nullable=False,
        doc="Instances of the study dropped as they came while it blocked (written every few"
        " seconds: `purge_blocks.REFRESH_S`).",
    )  # fmt: skip
    dropped_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When the last of those came."
    )
