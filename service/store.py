"""The store: SQLAlchemy tables and the only functions that read or write them.

SQLite file by default, any SQLAlchemy URL (PostgreSQL in a cluster) through settings. Every write
goes through a transition check (see :mod:`service.states`) and trial writes are idempotent on the
trial id, so a restarted driver cannot duplicate or regress a result.
"""

from __future__ import annotations

import types
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    case,
    cast,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from search_spaces.errors import NotFound

from .states import TERMINAL, State, check_transition

__all__ = [
    "PAGE_COLUMNS", "Base", "Experiment", "Trial", "Model", "PretrainingJob", "ApiToken", "StoreVersion", "Store",
    "get_store",
]  # fmt: skip


def _now() -> datetime:
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
    created_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


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
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)

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
    created_at: Mapped[datetime] = mapped_column(default=_now)


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
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class ApiToken(Base):
    """A bearer token: only a salted hash of its secret is kept (see :mod:`service.auth`)."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)  # the user; owner of what it creates
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    salt: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class StoreVersion(Base):
    """A counter per table that every committed write of that table increments (in its transaction).

    Readers key caches on it: an answer computed after reading version ``v`` is never older than ``v``,
    and any later write (from this process, a driver, another API replica) moves the version on, so a
    cached answer is reused only while nothing it depends on has changed. One row per table (only
    ``trials`` for now: the leaderboard and trial pages are functions of that table alone).
    """

    __tablename__ = "store_versions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


#: Built once: read on every cached API answer, where building the statement cost more than running it.
_VERSION_QUERY = select(StoreVersion.version).where(StoreVersion.name == bindparam("name"))
_OWNER_QUERY = select(Experiment.owner).where(Experiment.id == bindparam("id"))


#: A trial page's columns, in the order the API answers them (``specs.TrialPublic``'s fields).
PAGE_COLUMNS = (
    "id", "experiment_id", "stage", "kind", "state", "arch_hash", "arch", "epoch", "miou", "latency_ms",
    "params", "reward", "error", "node_id", "history", "created_at", "updated_at",
)  # fmt: skip


def _page_query(by_stage: bool):
    """A trial page's statement: :data:`PAGE_COLUMNS`, the JSON ones as their stored text (``trial_page``)."""
    table = Trial.__table__.c
    columns = [cast(table[c], Text).label(c) if c in ("arch", "history") else table[c] for c in PAGE_COLUMNS]
    query = select(*columns).where(Trial.experiment_id == bindparam("experiment_id"))
    if by_stage:
        query = query.where(Trial.stage == bindparam("stage"))
    return query.order_by(Trial.created_at, Trial.id)


_PAGE_QUERIES = {s: _page_query(s).limit(bindparam("limit")).offset(bindparam("offset")) for s in (False, True)}

#: Tables whose writes move their :class:`StoreVersion` row.
_VERSIONED = {Trial: "trials"}


def _bump_versions(session: Session, _flush_context) -> None:
    """``after_flush``: increment the version of every versioned table this flush wrote to.

    After the flush, so a transaction takes the counter's row lock after its rows' locks, never
    before: one that holds the counter is never waiting for a row another writer holds (PostgreSQL).
    """
    changed = {
        _VERSIONED[type(obj)] for obj in (*session.new, *session.dirty, *session.deleted) if type(obj) in _VERSIONED
    }
    table = StoreVersion.__table__
    for name in sorted(changed):  # one order for all writers
        session.connection().execute(update(table).where(table.c.name == name).values(version=table.c.version + 1))


_TRIAL_FIELDS = ("epoch", "miou", "latency_ms", "latency_device", "params", "reward", "error", "node_id")


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # A pool as deep as the API's thread pool (anyio's 40): with the default 5 (+10 overflow), a
        # burst of concurrent reads opened and closed overflow connections, each paying the pragmas.
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=32, max_overflow=32
        )

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record) -> None:  # WAL: the API reads while the driver writes
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _make_reader(url: str, engine: Engine) -> Engine:
    """The engine of the API's hot single-statement reads (a trial page, an owner, a table version).

    Autocommit: one statement needs no transaction, so no BEGIN before it and no ROLLBACK when the
    connection goes back to the pool. On PostgreSQL it is a pool of its own without a pre-ping, so a
    read is one round trip instead of four; a connection the server dropped (a restart) is retried
    once by :meth:`Store._read`, which is safe because these reads change nothing. Under load every
    round trip waits for a PostgreSQL backend to be scheduled on the same cores as the API.
    SQLite has no round trips (and opens no transaction for a read): its reads use the main engine.
    """
    if url.startswith("sqlite:///"):
        return engine
    return create_engine(url, pool_pre_ping=False, pool_size=8, max_overflow=8, isolation_level="AUTOCOMMIT")


def _page_statement(experiment_id: str, stage: int | None, limit: int | None, offset: int):
    """A trial page's statement and parameters; with a limit (the API's case) a statement built once."""
    if limit is not None:
        params = {"experiment_id": experiment_id, "stage": stage, "limit": limit, "offset": offset}
        return _PAGE_QUERIES[stage is not None], params
    return _page_query(stage is not None).offset(offset), {"experiment_id": experiment_id, "stage": stage}


def _all(result) -> list[Any]:
    # one fetchall from the driver; iterating the result fetched row by row (about a sixth of a
    # 100-row page's read time on PostgreSQL, profiled)
    return result.all()


def _first(result):
    return result.first()


def _scalar(result):
    return result.scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (cheap when it is there already).

    A database made by the pre-Alembic ``create_all`` has the tables but no version: it is stamped at
    the initial revision, whose schema it has, and upgraded from there.
    """
    from . import migrations

    with engine.begin() as conn:
        version = migrations.current(conn)
        if version == migrations.head():
            return
        if version is None and inspect(conn).has_table(Experiment.__tablename__):
            from alembic import command

            command.stamp(migrations.alembic_config(connection=conn), "0001")
        migrations.upgrade(conn)


class Store:
    """All reads and writes of experiments and trials."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        migrate(self.engine)
        self.reader = _make_reader(url, self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "after_flush", _bump_versions)
        self._write_callbacks: list[Callable[[], Callable[[], None] | None]] = []  # see on_write
        event.listen(self._sessions, "after_flush", self._flushed)
        event.listen(self._sessions, "after_commit", self._committed)

    def on_write(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each committed transaction of this store that wrote something.

        A bound method is held weakly: an app that registered its clock and was dropped (the store
        is cached per URL and outlives it) is forgotten, not called for ever.
        """
        ref = weakref.WeakMethod(callback) if isinstance(callback, types.MethodType) else (lambda: callback)
        self._write_callbacks.append(ref)

    def _flushed(self, session: Session, _context) -> None:
        session.info["geonas_wrote"] = True

    def _committed(self, session: Session) -> None:
        if not session.info.pop("geonas_wrote", False):
            return
        alive = []
        for ref in self._write_callbacks:
            callback = ref()
            if callback is not None:
                alive.append(ref)
                callback()
        self._write_callbacks = alive

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # -- experiments ----------------------------------------------------------------------------
    def create_experiment(self, name: str, spec: dict[str, Any], owner: str | None = None) -> Experiment:
        with self.session() as s:
            exp = Experiment(id=new_id(), name=name, spec=spec, state=State.PENDING, owner=owner)
            s.add(exp)
        return exp

    def get_experiment(self, experiment_id: str) -> Experiment:
        with self.session() as s:
            exp = s.get(Experiment, experiment_id)
            if exp is None:
                raise NotFound(f"experiment {experiment_id} does not exist; list them with GET /v1/experiments")
            return exp

    def list_experiments(self, limit: int = 100, offset: int = 0, owner: str | None = None) -> list[Experiment]:
        """Newest first; ``owner`` limits to one user's (None: everyone's, for admins)."""
        with self.session() as s:
            query = select(Experiment)
            if owner is not None:
                query = query.where(Experiment.owner == owner)
            rows = s.scalars(query.order_by(Experiment.created_at.desc()).limit(limit).offset(offset))
            return list(rows)

    def _update(self, table: type, kind: str, ident: str, state: str | None, fields: dict[str, Any]):
        """Set ``fields`` and move ``state`` through the one transition check; a missing row is NotFound."""
        with self.session() as s:
            row = s.get(table, ident)
            if row is None:
                raise NotFound(f"{kind} {ident} does not exist")
            if state is not None:
                check_transition(kind, ident, row.state, state)
                row.state = state
            for key, value in fields.items():
                setattr(row, key, value)
            return row

    def update_experiment(self, experiment_id: str, *, state: str | None = None, **fields: Any) -> Experiment:
        return self._update(Experiment, "experiment", experiment_id, state, fields)

    def reopen_experiment(self, experiment_id: str, spec: dict[str, Any]) -> Experiment:
        """Put a stopped experiment back to pending (for resume) with its possibly larger spec.

        The one transition out of a terminal state, kept here so nothing else can do it.
        """
        with self.session() as s:
            exp = s.get(Experiment, experiment_id)
            if exp is None:
                raise NotFound(f"experiment {experiment_id} does not exist")
            exp.state, exp.spec, exp.error = State.PENDING, spec, None
            return exp

    def delete_experiment(self, experiment_id: str) -> None:
        """Remove an experiment that never started (used when its job could not be submitted)."""
        with self.session() as s:
            exp = s.get(Experiment, experiment_id)
            if exp is not None:
                s.delete(exp)

    def trial_counts(self, experiment_ids: list[str]) -> dict[str, int]:
        """Finished stage-1 searched trials (completed, pruned or failed) per experiment."""
        if not experiment_ids:
            return {}
        with self.session() as s:
            rows = s.execute(
                select(Trial.experiment_id, func.count())
                .where(
                    Trial.experiment_id.in_(experiment_ids),
                    Trial.state.in_([str(State.COMPLETED), str(State.PRUNED), str(State.FAILED)]),
                )
                .where(Trial.kind == "searched", Trial.stage == 1)
                .group_by(Trial.experiment_id)
            )
            return {eid: n for eid, n in rows}

    # -- trials ---------------------------------------------------------------------------------
    def record_trial(
        self,
        trial_id: str,
        experiment_id: str,
        *,
        state: str,
        stage: int = 1,
        kind: str = "searched",
        arch: dict[str, Any] | None = None,
        arch_hash: str | None = None,
        history_entry: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Trial:
        """Create or update a trial, idempotently: a repeated report of an epoch changes nothing."""
        unknown = set(fields) - set(_TRIAL_FIELDS)
        if unknown:
            raise TypeError(f"unknown trial fields {sorted(unknown)}")
        with self.session() as s:
            trial = s.get(Trial, trial_id, with_for_update=True)
            if trial is None:
                trial = Trial(
                    id=trial_id,
                    experiment_id=experiment_id,
                    stage=stage,
                    kind=kind,
                    state=State.PENDING,
                    arch=arch,
                    arch_hash=arch_hash,
                    history=[],
                )
                s.add(trial)
            elif trial.state in TERMINAL:
                check_transition("trial", trial_id, trial.state, state)
                return trial
            check_transition("trial", trial_id, trial.state, state)
            trial.state = state
            if arch is not None:
                trial.arch, trial.arch_hash = arch, arch_hash
            for key, value in fields.items():
                if value is not None:
                    setattr(trial, key, value)
            if history_entry is not None:
                epochs = {h.get("epoch") for h in trial.history}
                if history_entry.get("epoch") not in epochs:
                    trial.history = [*trial.history, history_entry]
            return trial

    def list_trials(
        self, experiment_id: str, stage: int | None = None, limit: int | None = None, offset: int = 0
    ) -> list[Trial]:
        """In creation order; ``limit``/``offset`` page through an experiment's (possibly many) trials."""
        with self.session() as s:
            query = select(Trial).where(Trial.experiment_id == experiment_id)
            if stage is not None:
                query = query.where(Trial.stage == stage)
            query = query.order_by(Trial.created_at, Trial.id).offset(offset)
            return list(s.scalars(query.limit(limit) if limit is not None else query))

    def trial_page(
        self, experiment_id: str, stage: int | None = None, limit: int | None = None, offset: int = 0
    ) -> list[Any]:
        """The trials :meth:`list_trials` would return, as rows of :data:`PAGE_COLUMNS`, for an API page.

        Tuples, not ORM objects or dicts: a page is read, not changed, and building a thousand tracked
        objects dominated its cost (and dicts were a tenth of a page's build). The JSON columns
        (``arch``, ``history``) come back as their stored JSON text, undecoded, for the caller to pass
        through. Like ``list_trials`` on the raw store, this does not check ownership: the trials route
        has already looked the experiment up through its scoped store.
        """
        return self._read(*_page_statement(experiment_id, stage, limit, offset), _all)

    def experiment_owner(self, experiment_id: str) -> str | None:
        """The experiment's owner (None: made with auth off); NotFound when it does not exist."""
        row = self._read(_OWNER_QUERY, {"id": experiment_id}, _first)
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist; list them with GET /v1/experiments")
        return row[0]

    def write_version(self, table: str = "trials") -> int | None:
        """The table's write counter (see :class:`StoreVersion`); read it *before* what it keys.

        None when the database has no counter for the table (nothing would move it): do not cache.
        """
        value = self._read(_VERSION_QUERY, {"name": table}, _scalar)
        return None if value is None else int(value)

    def _read(self, statement, params: dict[str, Any], take: Callable[[Any], Any]) -> Any:
        """``take(result)`` of one read-only statement on the reader engine (see :func:`_make_reader`),
        run again once on a fresh connection if the server had dropped the pooled one."""
        for attempt in (1, 2):
            try:
                with self.reader.connect() as conn:
                    return take(conn.execute(statement, params))
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise

    def count_finished(self, experiment_id: str, stage: int = 1, kind: str = "searched") -> int:
        """Trials that used up budget: completed, pruned or failed (not cancelled)."""
        finished = [str(State.COMPLETED), str(State.PRUNED), str(State.FAILED)]
        with self.session() as s:
            query = select(func.count()).where(
                Trial.experiment_id == experiment_id,
                Trial.stage == stage,
                Trial.kind == kind,
                Trial.state.in_(finished),
            )
            return int(s.scalar(query) or 0)

    def interrupt_open_trials(self, experiment_id: str, reason: str) -> int:
        """Mark trials a stopped driver left pending or running as cancelled (they are re-run)."""
        return self.cancel_open_trials(experiment_id, reason)

    def cancel_open_trials(self, experiment_id: str, reason: str) -> int:
        with self.session() as s:
            trials = s.scalars(
                select(Trial).where(
                    Trial.experiment_id == experiment_id, Trial.state.in_([State.PENDING, State.RUNNING])
                )
            )
            n = 0
            for trial in trials:
                trial.state, trial.error = State.CANCELLED, reason
                n += 1
            return n

    # -- models ---------------------------------------------------------------------------------
    def register_model(self, experiment_id: str, **fields: Any) -> Model:
        """Register a fine-tuned model once per (experiment, trial): a re-run driver updates it."""
        with self.session() as s:
            existing = s.scalars(
                select(Model).where(Model.experiment_id == experiment_id, Model.trial_id == fields.get("trial_id"))
            ).first()
            model = existing or Model(id=new_id(), experiment_id=experiment_id)
            if model.owner is None:  # a model belongs to whoever owns its experiment
                model.owner = s.scalar(select(Experiment.owner).where(Experiment.id == experiment_id))
            for key, value in fields.items():
                setattr(model, key, value)
            s.add(model)
            return model

    def get_model(self, model_id: str) -> Model:
        with self.session() as s:
            model = s.get(Model, model_id)
            if model is None:
                raise NotFound(f"model {model_id} does not exist; list them with GET /v1/models")
            return model

    def list_models(self, experiment_id: str | None = None, limit: int = 100, owner: str | None = None) -> list[Model]:
        with self.session() as s:
            query = select(Model)
            if experiment_id is not None:
                query = query.where(Model.experiment_id == experiment_id)
            if owner is not None:
                query = query.where(Model.owner == owner)
            return list(s.scalars(query.order_by(Model.miou.desc()).limit(limit)))

    # -- pretraining ----------------------------------------------------------------------------
    def create_pretraining(self, name: str, spec: dict[str, Any], owner: str | None = None) -> PretrainingJob:
        with self.session() as s:
            job = PretrainingJob(id=new_id(), name=name, spec=spec, state=State.PENDING, loss_curve=[], owner=owner)
            s.add(job)
        return job

    def get_pretraining(self, job_id: str) -> PretrainingJob:
        with self.session() as s:
            job = s.get(PretrainingJob, job_id)
            if job is None:
                raise NotFound(f"pretraining job {job_id} does not exist; list them with GET /v1/pretraining")
            return job

    def list_pretraining(self, limit: int = 100, owner: str | None = None) -> list[PretrainingJob]:
        with self.session() as s:
            query = select(PretrainingJob).order_by(PretrainingJob.created_at.desc()).limit(limit)
            if owner is not None:
                query = query.where(PretrainingJob.owner == owner)
            return list(s.scalars(query))

    def update_pretraining(self, pretraining_id: str, *, state: str | None = None, **fields: Any) -> PretrainingJob:
        """Update a pretraining job (``fields`` may include ``job_id``, the Ray Job's id)."""
        return self._update(PretrainingJob, "pretraining job", pretraining_id, state, fields)

    def delete_pretraining(self, job_id: str) -> None:
        with self.session() as s:
            job = s.get(PretrainingJob, job_id)
            if job is not None:
                s.delete(job)

    def leaderboard_candidates(
        self,
        max_latency_ms: float | None,
        device: str | None,
        stage: int | None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[tuple[Trial, Experiment]]:
        """Completed trials by mIoU, best first. With ``limit``, the first ``limit`` and every trial tied
        with the last of them: all that can dominate those rows (see ``routes.leaderboard``)."""
        with self.session() as s:
            query = (
                select(Trial, Experiment)
                .join(Experiment, Trial.experiment_id == Experiment.id)
                .where(Trial.state == State.COMPLETED, Trial.miou.is_not(None))
            )
            if max_latency_ms is not None:
                query = query.where(Trial.latency_ms <= max_latency_ms)
            if device is not None:
                query = query.where(Trial.latency_device == device)
            if stage is not None:
                query = query.where(Trial.stage == stage)
            if owner is not None:
                query = query.where(Experiment.owner == owner)
            ordered = query.order_by(Trial.miou.desc(), Trial.id)
            rows = [(t, e) for t, e in s.execute(ordered.limit(limit) if limit is not None else ordered)]
            if limit is not None and len(rows) == limit:
                seen = {t.id for t, _ in rows}
                ties = s.execute(ordered.where(Trial.miou == rows[-1][0].miou))
                rows += [(t, e) for t, e in ties if t.id not in seen]
            return rows

    # -- tokens ---------------------------------------------------------------------------------
    def add_token(self, token_id: str, name: str, admin: bool, salt: str, digest: str) -> ApiToken:
        with self.session() as s:
            token = ApiToken(id=token_id, name=name, admin=admin, salt=salt, digest=digest)
            s.add(token)
        return token

    def get_token(self, token_id: str) -> ApiToken | None:
        with self.session() as s:
            return s.get(ApiToken, token_id)

    def list_tokens(self) -> list[ApiToken]:
        with self.session() as s:
            return list(s.scalars(select(ApiToken).order_by(ApiToken.created_at)))

    def revoke_token(self, token_id: str) -> None:
        with self.session() as s:
            token = s.get(ApiToken, token_id)
            if token is None:
                raise NotFound(f"token {token_id} does not exist; list them with `geonas token list`")
            token.revoked_at = token.revoked_at or _now()

    # -- metrics --------------------------------------------------------------------------------
    def state_counts(self) -> dict[str, dict[str, int]]:
        """Experiments, trials and pretraining jobs by state (one GROUP BY each)."""
        out: dict[str, dict[str, int]] = {}
        with self.session() as s:
            for key, table in (("experiments", Experiment), ("trials", Trial), ("pretraining", PretrainingJob)):
                out[key] = dict(s.execute(select(table.state, func.count()).group_by(table.state)).all())
        return out

    def trial_durations(self) -> list[float]:
        """Seconds from creation to the last update of every finished trial."""
        with self.session() as s:
            rows = s.execute(
                select(Trial.created_at, Trial.updated_at).where(Trial.state.in_([str(x) for x in TERMINAL]))
            )
            return [max((end - start).total_seconds(), 0.0) for start, end in rows]

    def trial_duration_histogram(self, bounds: tuple[float, ...]) -> tuple[list[int], int, float]:
        """Cumulative counts of finished trials' durations at each bound, the count and the sum, in one
        aggregate query (a scrape must not load every trial into Python)."""
        if self.engine.dialect.name == "sqlite":
            seconds = (func.julianday(Trial.updated_at) - func.julianday(Trial.created_at)) * 86400.0
        else:
            seconds = func.extract("epoch", Trial.updated_at - Trial.created_at)
        columns = [func.count(), func.coalesce(func.sum(seconds), 0.0)]
        columns += [func.coalesce(func.sum(case((seconds <= bound, 1), else_=0)), 0) for bound in bounds]
        with self.session() as s:
            row = s.execute(select(*columns).where(Trial.state.in_([str(x) for x in TERMINAL]))).one()
        return [int(n) for n in row[2:]], int(row[0]), float(row[1])


@lru_cache(maxsize=8)
def get_store(url: str) -> Store:
    return Store(url)
