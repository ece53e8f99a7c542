"""jobs and model_versions

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(32)),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("epoch", sa.Integer),
        sa.Column("epochs", sa.Integer),
        sa.Column("metrics", JSON),
        sa.Column("best_metrics", JSON),
        sa.Column("history", JSON, nullable=False),
        sa.Column("error_reason", sa.String(64)),
        sa.Column("error_detail", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("launcher", sa.String(16)),
        sa.Column("runner_ref", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("version", sa.Integer),
        sa.Column("artifacts", JSON),
        sa.Column("promotion", JSON),
        sa.Column("webhook_state", sa.String(16)),
        sa.Column("webhook", JSON),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_index("ix_jobs_model_name", "jobs", ["model_name"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id"), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model_name", "version", name="uq_model_versions"),
    )


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_index("ix_jobs_status", "jobs")
    op.drop_index("ix_jobs_model_name", "jobs")
    op.drop_table("jobs")
