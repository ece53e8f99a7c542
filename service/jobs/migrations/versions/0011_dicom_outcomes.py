"""dicom outcomes: scans the node classified, waiting for the RIS's final report of their exam

Revision ID: 0011_dicom_outcomes
Revises: 0010_model_outcomes
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_dicom_outcomes"
down_revision = "0010_model_outcomes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_outcomes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("accession", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(80), nullable=False),
        sa.Column("probabilities", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(80)),
        sa.Column("label", sa.String(128)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("model", "version", "reference", name="uq_dicom_outcome"),
    )
    op.create_index("ix_dicom_outcomes_accession", "dicom_outcomes", ["accession"])
    op.create_index("ix_dicom_outcomes_state", "dicom_outcomes", ["state"])


def downgrade() -> None:
    op.drop_table("dicom_outcomes")
