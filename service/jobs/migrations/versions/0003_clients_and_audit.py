"""clients_and_audit: jobs belong to a client, idempotency keys are per client, audit table

Revision ID: 0003_clients_and_audit
Revises: 0002
Create Date: 2026-12-05
"""

import hashlib

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_clients_and_audit"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def scoped(client: str, key: str) -> str:
    """Mirrors service.jobs.store.scoped_key (a migration must not import the app)."""
    return hashlib.sha256(f"{client}\x00{key}".encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("client", sa.String(255), nullable=False, server_default=""))
        batch.create_index("ix_jobs_client", ["client"])
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String),
        sa.column("client", sa.String),
        sa.column("created_by", sa.String),
        sa.column("idempotency_key", sa.String),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.created_by, jobs.c.idempotency_key)).all()
    for job_id, created_by, key in rows:  # old jobs belong to the key name that made them
        values = {"client": created_by}
        if key is not None:
            values["idempotency_key"] = scoped(created_by, key)
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("detail", JSON, nullable=False),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_client", "audit_events", ["client"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])


def downgrade() -> None:
    op.drop_table("audit_events")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_client")
        batch.drop_column("client")
