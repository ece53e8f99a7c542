"""step, steps: where a running job is inside its epoch, for progress a person can watch

Revision ID: 0005_job_steps
Revises: dicom_node_queue
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_job_steps"
down_revision = "dicom_node_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("step", sa.Integer()))
        batch.add_column(sa.Column("steps", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("steps")
        batch.drop_column("step")
