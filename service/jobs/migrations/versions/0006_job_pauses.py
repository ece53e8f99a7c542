"""pauses: a job's attempts that ended paused by their service stopping (not failures)

Revision ID: 0006_job_pauses
Revises: 0005_job_steps
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_job_pauses"
down_revision = "0005_job_steps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("pauses", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pauses")
