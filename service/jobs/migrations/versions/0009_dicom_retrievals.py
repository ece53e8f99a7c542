"""dicom retrievals: studies fetched from a PACS in the background (POST /v1/retrievals with
wait false), with what became of each

Revision ID: 0009_dicom_retrievals
Revises: 0008_dicom_orders
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_dicom_retrievals"
down_revision = "0008_dicom_orders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_retrievals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64)),
        sa.Column("series_uid", sa.String(64)),
        sa.Column("accession", sa.String(64)),
        sa.Column("client", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("studies", sa.Text()),
        sa.Column("completed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("warning", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_dicom_retrievals_state", "dicom_retrievals", ["state"])


def downgrade() -> None:
    op.drop_index("ix_dicom_retrievals_state", "dicom_retrievals")
    op.drop_table("dicom_retrievals")
