"""dicom_series, dicom_instances, dicom_deliveries: the DICOM node's durable work queue

Revision ID: dicom_node_queue
Revises: 0002
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "dicom_node_queue"
down_revision = "0003_clients_and_audit"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dicom_series",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("model", sa.String(64)),
        sa.Column("alias", sa.String(32)),
        sa.Column("result_uid", sa.String(64), unique=True),
        sa.Column("result_file", sa.String(255)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", WHEN),
        sa.Column("last_error", sa.String(255)),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("last_instance_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN),
        sa.UniqueConstraint("series_uid", "generation", name="uq_dicom_series_generation"),
    )
    op.create_index("ix_dicom_series_state", "dicom_series", ["state"])
    op.create_table(
        "dicom_instances",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "series_id",
            sa.Integer,
            sa.ForeignKey("dicom_series.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("file", sa.String(255)),
        sa.Column("received_at", WHEN, nullable=False),
        sa.UniqueConstraint("series_id", "sop_instance_uid", name="uq_dicom_instance"),
    )
    op.create_index("ix_dicom_instances_series_id", "dicom_instances", ["series_id"])
    op.create_table(
        "dicom_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "series_id",
            sa.Integer,
            sa.ForeignKey("dicom_series.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", WHEN, nullable=False),
        sa.Column("last_error", sa.String(255)),
        sa.Column("delivered_at", WHEN),
        sa.UniqueConstraint("series_id", "destination", name="uq_dicom_delivery"),
    )
    op.create_index("ix_dicom_deliveries_state", "dicom_deliveries", ["state"])


def downgrade() -> None:
    op.drop_table("dicom_deliveries")
    op.drop_table("dicom_instances")
    op.drop_table("dicom_series")
