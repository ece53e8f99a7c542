"""dicom series version: the model version that classified a series, to find a recalled
version's results

Revision ID: 0013_dicom_series_version
Revises: 0012_dicom_exam_reports
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_dicom_series_version"
down_revision = "0012_dicom_exam_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_series") as table:  # SQLite alters by copying the table
        table.add_column(sa.Column("version", sa.Integer(), nullable=True))
        table.create_index("ix_dicom_series_model_version", ["model", "version"])


def downgrade() -> None:
    with op.batch_alter_table("dicom_series") as table:
        table.drop_index("ix_dicom_series_model_version")
        table.drop_column("version")
