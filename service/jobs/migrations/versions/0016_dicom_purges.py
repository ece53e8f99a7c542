"""dicom purges: a study sent to the node by mistake, forgotten (named only by its hash)

Revision ID: 0016_dicom_purges
Revises: 0015_dicom_recall_lifts
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_dicom_purges"
down_revision = "0015_dicom_recall_lifts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_purges",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.Column("delivered", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_dicom_purges_state", "dicom_purges", ["state"])


def downgrade() -> None:
    op.drop_index("ix_dicom_purges_state", "dicom_purges")
    op.drop_table("dicom_purges")
