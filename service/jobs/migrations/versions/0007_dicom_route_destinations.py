"""dicom route destinations: the destinations a series' route chose (null: every one)

Revision ID: 0007_dicom_route_destinations
Revises: 0006_job_pauses
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_dicom_route_destinations"
down_revision = "0006_job_pauses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_series") as batch:
        batch.add_column(sa.Column("destinations", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dicom_series") as batch:
        batch.drop_column("destinations")
