"""dicom orders: the RIS's orders (HL7 ORM^O01) waiting for their study to be fetched

Revision ID: 0008_dicom_orders
Revises: 0007_dicom_route_destinations
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_dicom_orders"
down_revision = "0007_dicom_route_destinations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_orders",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("accession", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(255)),
        sa.Column("studies", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_dicom_orders_state", "dicom_orders", ["state"])


def downgrade() -> None:
    op.drop_index("ix_dicom_orders_state", "dicom_orders")
    op.drop_table("dicom_orders")
