"""dicom withdrawal reasons: each withdrawal keeps the reason of the recall that made it, so
that one still pending when its lifted recall is made anew (with another reason) is sent with
its own

Revision ID: 0018_dicom_withdrawal_reasons
Revises: 0017_dicom_purge_blocks
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_dicom_withdrawal_reasons"
down_revision = "0017_dicom_purge_blocks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dicom_withdrawals") as table:  # SQLite alters by copying the table
        # Nullable: a node of the release before may still make withdrawals during an upgrade.
        table.add_column(sa.Column("reason", sa.String(255), nullable=True))
    # The withdrawals made before take their recall's reason: the one they were sent with so
    # far (that of a recall made anew replaced the first, which was not kept).
    withdrawals = sa.table("dicom_withdrawals", sa.column("recall_id"), sa.column("reason"))
    recalls = sa.table("dicom_recalls", sa.column("id"), sa.column("reason"))
    op.execute(
        withdrawals.update().values(
            reason=sa.select(recalls.c.reason)
            .where(recalls.c.id == withdrawals.c.recall_id)
            .scalar_subquery()
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("dicom_withdrawals") as table:
        table.drop_column("reason")
