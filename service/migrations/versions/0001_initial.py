"""Initial tables: experiments, trials, models, pretraining_jobs (the schema the store had before Alembic).

A database created by the old ``create_all`` is stamped at this revision by the store, not re-created.

Revision ID: 0001
Revises: -
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("dashboard_url", sa.String(length=500), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiments_state"), ["state"], unique=False)

    op.create_table(
        "pretraining_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("dashboard_url", sa.String(length=500), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("loss_curve", sa.JSON(), nullable=False),
        sa.Column("knn", sa.JSON(), nullable=True),
        sa.Column("artifact", sa.String(length=1000), nullable=True),
        sa.Column("encoder", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pretraining_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pretraining_jobs_state"), ["state"], unique=False)

    op.create_table(
        "models",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("trial_id", sa.String(length=96), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("arch_hash", sa.String(length=32), nullable=True),
        sa.Column("descriptor", sa.JSON(), nullable=False),
        sa.Column("miou", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("latency_device", sa.String(length=64), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("training", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_experiment_id"), ["experiment_id"], unique=False)

    op.create_table(
        "trials",
        sa.Column("id", sa.String(length=96), nullable=False),
        sa.Column("experiment_id", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("arch_hash", sa.String(length=32), nullable=True),
        sa.Column("arch", sa.JSON(), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("miou", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("latency_device", sa.String(length=64), nullable=True),
        sa.Column("params", sa.Integer(), nullable=True),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trials_arch_hash"), ["arch_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_trials_experiment_id"), ["experiment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_trials_miou"), ["miou"], unique=False)
        batch_op.create_index(batch_op.f("ix_trials_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trials_state"))
        batch_op.drop_index(batch_op.f("ix_trials_miou"))
        batch_op.drop_index(batch_op.f("ix_trials_experiment_id"))
        batch_op.drop_index(batch_op.f("ix_trials_arch_hash"))

    op.drop_table("trials")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_experiment_id"))

    op.drop_table("models")
    with op.batch_alter_table("pretraining_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pretraining_jobs_state"))

    op.drop_table("pretraining_jobs")
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_experiments_state"))

    op.drop_table("experiments")
