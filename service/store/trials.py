"""Trials: idempotent result writes, lists and API pages of an experiment's trials, the counts a driver's
budget and the experiment list use, cancelling a stopped driver's open trials, and the leaderboard's rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, bindparam, cast, func, select

from ..states import TERMINAL, State, check_transition
from .core import StoreCore, fetch_all
from .schema import Experiment, Trial

__all__ = ["PAGE_COLUMNS", "Trials"]

_TRIAL_FIELDS = ("epoch", "miou", "latency_ms", "latency_device", "params", "reward", "error", "node_id")

#: A trial page's columns, in the order the API answers them (``public.TrialPublic``'s fields).
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


def _page_statement(experiment_id: str, stage: int | None, limit: int | None, offset: int):
    """A trial page's statement and parameters; with a limit (the API's case) a statement built once."""
    if limit is not None:
        params = {"experiment_id": experiment_id, "stage": stage, "limit": limit, "offset": offset}
        return _PAGE_QUERIES[stage is not None], params
    return _page_query(stage is not None).offset(offset), {"experiment_id": experiment_id, "stage": stage}


class Trials(StoreCore):
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
        return self._read(*_page_statement(experiment_id, stage, limit, offset), fetch_all)

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
