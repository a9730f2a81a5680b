"""The tables: one SQLAlchemy class per table, and :func:`migrate`, which brings a database to them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..states import State

__all__ = [
    "Base", "Experiment", "Trial", "Model", "PretrainingJob", "PredictionJob", "ApiToken", "StoreVersion", "migrate",
    "new_id", "now",
]  # fmt: skip


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class Base(DeclarativeBase):
    pass


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default=State.PENDING, index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dashboard_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)  # a token's user
    created_at: Mapped[datetime] = mapped_column(default=now, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)


class Trial(Base):
    __tablename__ = "trials"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    # Indexed by ix_trials_experiment_created, whose first column it is (no index of its own: see 0004).
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"))
    stage: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(16), default="searched")  # searched | baseline
    state: Mapped[str] = mapped_column(String(16), default=State.PENDING, index=True)
    arch_hash: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    arch: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    miou: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    params: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)

    # The leaderboard filters on state and sorts by mIoU; a trial page is one experiment in order.
    __table_args__ = (
        Index("ix_trials_state_miou", "state", "miou"),
        Index("ix_trials_experiment_created", "experiment_id", "created_at", "id"),
    )


class Model(Base):
    """A fine-tuned (stage-2) model: its architecture, metrics, normalisation and exported artifacts."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"), index=True)
    trial_id: Mapped[str | None] = mapped_column(String(96), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="searched")
    arch_hash: Mapped[str | None] = mapped_column(String(32), nullable=True)
    descriptor: Mapped[dict[str, Any]] = mapped_column(JSON)
    miou: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    training: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # bands, classes, mean, std
    artifacts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # name -> path
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)  # the experiment's
    created_at: Mapped[datetime] = mapped_column(default=now)


class PretrainingJob(Base):
    """A CSF pretraining run; once completed, its encoder is a backbone experiments can name."""

    __tablename__ = "pretraining_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default=State.PENDING, index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dashboard_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    loss_curve: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    knn: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    artifact: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    encoder: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # backbone, bands, ...
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)


class PredictionJob(Base):
    """A batch prediction: one registered model over many scenes, as a Ray Data job on the cluster."""

    __tablename__ = "prediction_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    model_id: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(16), default=State.PENDING, index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dashboard_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # scenes and windows done, windows/s
    scenes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # per scene: state, output, error
    mosaic: Mapped[str | None] = mapped_column(String(1000), nullable=True)  # the VRT over the masks
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=now)
    updated_at: Mapped[datetime] = mapped_column(default=now, onupdate=now)


class ApiToken(Base):
    """A bearer token: only a salted hash of its secret is kept (see :mod:`service.auth`)."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)  # the user; owner of what it creates
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    salt: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class StoreVersion(Base):
    """A counter per table that every committed write of that table increments (in its transaction).

    Readers key caches on it: an answer computed after reading version ``v`` is never older than ``v``,
    and any later write (from this process, a driver, another API replica) moves the version on, so a
    cached answer is reused only while nothing it depends on has changed. One row per table (only
    ``trials`` for now: the leaderboard and trial pages are functions of that table alone).
    Moved by :func:`service.store.versions.bump_versions`, read by ``Store.write_version``.
    """

    __tablename__ = "store_versions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (cheap when it is there already).

    A database made by the pre-Alembic ``create_all`` has the tables but no version: it is stamped at
    the initial revision, whose schema it has, and upgraded from there.
    """
    from .. import migrations

    with engine.begin() as conn:
        version = migrations.current(conn)
        if version == migrations.head():
            return
        if version is None and inspect(conn).has_table(Experiment.__tablename__):
            from alembic import command

            command.stamp(migrations.alembic_config(connection=conn), "0001")
        migrations.upgrade(conn)
