"""dicom purge blocks: a purge blocks its study (instances sent again are dropped) until it
is released; who released it, why, and how many instances it dropped

Revision ID: 0017_dicom_purge_blocks
Revises: 0016_dicom_purges
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_dicom_purge_blocks"
down_revision = "0016_dicom_purges"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_purges") as table:  # SQLite alters by copying the table
        # Purges made before blocked nothing: they go on blocking nothing.
        table.add_column(
            sa.Column("blocked", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        table.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
        table.add_column(sa.Column("released_by", sa.String(255), nullable=True))
        table.add_column(sa.Column("released_reason", sa.String(255), nullable=True))
        table.add_column(sa.Column("dropped", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("dropped_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dicom_purges") as table:
        table.drop_column("dropped_at")
        table.drop_column("dropped")
        table.drop_column("released_reason")
        table.drop_column("released_by")
        table.drop_column("released_at")
        table.drop_column("blocked")
