"""dicom recall lifts: a recall lifted (a mistake, or the version put back in service), who
lifted it and why

Revision ID: 0015_dicom_recall_lifts
Revises: 0014_dicom_recalls
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_dicom_recall_lifts"
down_revision = "0014_dicom_recalls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_recalls") as table:  # SQLite alters by copying the table
        table.add_column(sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("lifted_by", sa.String(255), nullable=True))
        table.add_column(sa.Column("lift_reason", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dicom_recalls") as table:
        table.drop_column("lift_reason")
        table.drop_column("lifted_by")
        table.drop_column("lifted_at")
