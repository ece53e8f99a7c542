"""model outcomes: confirmed diagnoses clients report for scans a version classified

Revision ID: 0010_model_outcomes
Revises: 0009_dicom_retrievals
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010_model_outcomes"
down_revision = "0009_dicom_retrievals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_outcomes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(255), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("probabilities", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "model_name", "version", "client", "reference", name="uq_model_outcomes"
        ),
    )


def downgrade() -> None:
    op.drop_table("model_outcomes")
