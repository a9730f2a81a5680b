"""Prediction jobs: a registered model run over many scenes as a Ray Data job (``POST /v1/predictions``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("model_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("dashboard_url", sa.String(length=500), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("scenes", sa.JSON(), nullable=False),
        sa.Column("mosaic", sa.String(length=1000), nullable=True),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("prediction_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prediction_jobs_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_prediction_jobs_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_prediction_jobs_owner"), ["owner"], unique=False)


def downgrade() -> None:
    op.drop_table("prediction_jobs")
