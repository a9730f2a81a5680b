"""Tokens, an owner on experiments, models and pretraining jobs, and the indexes the leaderboard and
trial pages use (state+mIoU; experiment+creation order).

Existing rows keep owner NULL: only an admin token sees them once auth is on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tokens_name"), ["name"], unique=False)

    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f("ix_experiments_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_experiments_owner"), ["owner"], unique=False)

    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f("ix_models_owner"), ["owner"], unique=False)

    with op.batch_alter_table("pretraining_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f("ix_pretraining_jobs_owner"), ["owner"], unique=False)

    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index("ix_trials_experiment_created", ["experiment_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_trials_state_miou", ["state", "miou"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_state_miou")
        batch_op.drop_index("ix_trials_experiment_created")

    with op.batch_alter_table("pretraining_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pretraining_jobs_owner"))
        batch_op.drop_column("owner")

    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_owner"))
        batch_op.drop_column("owner")

    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiments_owner"))
        batch_op.drop_index(batch_op.f("ix_experiments_created_at"))
        batch_op.drop_column("owner")

    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tokens_name"))

    op.drop_table("tokens")
