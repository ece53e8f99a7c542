"""dicom recalls: a recalled version's results stopped, and withdrawn where they went

Revision ID: 0014_dicom_recalls
Revises: 0013_dicom_series_version
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_dicom_recalls"
down_revision = "0013_dicom_series_version"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_recalls",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stopped", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("model", "version", name="uq_dicom_recall"),
    )
    op.create_table(
        "dicom_withdrawals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "recall_id",
            sa.Integer(),
            sa.ForeignKey("dicom_recalls.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "series_id",
            sa.Integer(),
            sa.ForeignKey("dicom_series.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("series_id", "destination", name="uq_dicom_withdrawal"),
    )
    op.create_index("ix_dicom_withdrawals_state", "dicom_withdrawals", ["state"])
    op.create_index("ix_dicom_withdrawals_recall", "dicom_withdrawals", ["recall_id"])


def downgrade() -> None:
    op.drop_index("ix_dicom_withdrawals_recall", "dicom_withdrawals")
    op.drop_index("ix_dicom_withdrawals_state", "dicom_withdrawals")
    op.drop_table("dicom_withdrawals")
    op.drop_table("dicom_recalls")
