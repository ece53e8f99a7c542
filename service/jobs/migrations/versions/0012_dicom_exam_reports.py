"""dicom exam reports: the RIS's final report of an exam, kept for scans classified after it

Revision ID: 0012_dicom_exam_reports
Revises: 0011_dicom_outcomes
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_dicom_exam_reports"
down_revision = "0011_dicom_outcomes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_exam_reports",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("accession", sa.String(64), nullable=False),
        sa.Column("codes", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("accession", name="uq_dicom_exam_report"),
    )


def downgrade() -> None:
    op.drop_table("dicom_exam_reports")
