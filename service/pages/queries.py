"""Read-only projections of the store that the pages need, cached per experiment version.

The REST resources return whole trials (architecture and per-epoch history included); the pages
need a few scalar columns of every trial, often, while an experiment runs. Loading 10,000 full
trial rows on every poll would make the page slow, so this module selects only those columns, and
keeps the result until the experiment's *version* (trial count, newest trial update, experiment
state) changes. It never writes: the store stays the one writer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select

from ..store import Experiment, Store, Trial

__all__ = [
    "CHART_CACHE",
    "clear_caches",
    "TrialRow",
    "VersionCache",
    "experiment_version",
    "trial_rows",
    "trial_histories",
    "TABLE_COLUMNS",
    "table_page",
]


class TrialRow(NamedTuple):
    """The scalar columns of one trial (a tuple: 10,000 of them are built per experiment version)."""

    id: str
    kind: str
    stage: int
    state: str
    arch_hash: str | None
    miou: float | None
    latency_ms: float | None
    params: int | None
    reward: float | None
    epoch: int
    error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.updated_at - self.created_at).total_seconds())

    def public(self) -> dict[str, Any]:
        row = self._asdict()
        row["error"] = (self.error or "")[:300] or None
        row["created_at"] = self.created_at.isoformat()
        row["updated_at"] = self.updated_at.isoformat()
        row["duration_s"] = round(self.duration_s, 1)
        return row


_COLUMNS = (
    Trial.id,
    Trial.kind,
    Trial.stage,
    Trial.state,
    Trial.arch_hash,
    Trial.miou,
    Trial.latency_ms,
    Trial.params,
    Trial.reward,
    Trial.epoch,
    Trial.error,
    Trial.created_at,
    Trial.updated_at,
)

# Columns the trial table can sort on, each with a key that puts missing values last.
TABLE_COLUMNS = (
    "state",
    "kind",
    "stage",
    "arch_hash",
    "miou",
    "latency_ms",
    "params",
    "reward",
    "epoch",
    "duration_s",
    "error",
    "created_at",
)


def experiment_version(store: Store, experiment_id: str) -> str:
    """Changes whenever a trial is added or updated or the experiment changes state."""
    with store.session() as s:
        count, newest = s.execute(
            select(func.count(), func.max(Trial.updated_at)).where(Trial.experiment_id == experiment_id)
        ).one()
        exp = s.execute(
            select(Experiment.state, Experiment.updated_at).where(Experiment.id == experiment_id)
        ).one_or_none()
    state, updated = exp if exp else ("", None)
    return f"{count}:{newest}:{state}:{updated}"


class VersionCache:
    """A small thread-safe LRU map; keys include a version, so stale entries simply age out."""

    def __init__(self, size: int = 8) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: tuple) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: tuple, value: Any) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_rows_cache = VersionCache()
CHART_CACHE = VersionCache(16)


def clear_caches() -> None:
    """Forget cached rows and charts (benchmarks measure cold requests with this)."""
    for cache in (_rows_cache, CHART_CACHE):
        with cache.lock:
            cache.items.clear()


def trial_rows(store: Store, experiment_id: str, version: str) -> list[TrialRow]:
    """Every trial of an experiment as scalar columns, in order of start."""
    key = (store.url, experiment_id, version)
    cached = _rows_cache.get(key)
    if cached is not None:
        return cached
    # The page asks for summary, charts and table at once: one of them reads, the others wait for it.
    with _loading_lock(key):
        cached = _rows_cache.get(key)
        if cached is not None:
            return cached
        with store.session() as s:
            query = select(*_COLUMNS).where(Trial.experiment_id == experiment_id)
            rows = [TrialRow._make(r) for r in s.execute(query.order_by(Trial.created_at, Trial.id)).tuples()]
        _rows_cache.put(key, rows)
    return rows


_loading: dict[tuple, threading.Lock] = {}
_loading_guard = threading.Lock()


def _loading_lock(key: tuple) -> threading.Lock:
    with _loading_guard:
        if len(_loading) > 64:
            _loading.clear()
        return _loading.setdefault(key, threading.Lock())


def trial_histories(store: Store, experiment_id: str, trial_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per-epoch history of the named trials of one experiment (in the order asked)."""
    if not trial_ids:
        return {}
    with store.session() as s:
        found = dict(
            s.execute(
                select(Trial.id, Trial.history).where(Trial.experiment_id == experiment_id, Trial.id.in_(trial_ids))
            ).all()
        )
    return {i: found[i] or [] for i in trial_ids if i in found}


def table_page(
    rows: list[TrialRow],
    *,
    sort: str,
    descending: bool,
    state: str | None,
    text: str | None,
    offset: int,
    limit: int,
) -> tuple[int, list[TrialRow]]:
    """Filter (state, substring of id/hash/error), sort (missing values last), and cut one page."""
    chosen = rows
    if state:
        chosen = [r for r in chosen if r.state == state]
    if text:
        needle = text.lower()
        chosen = [
            r
            for r in chosen
            if needle in r.id.lower() or needle in (r.arch_hash or "").lower() or needle in (r.error or "").lower()
        ]
    present = [r for r in chosen if getattr(r, sort) is not None]
    missing = [r for r in chosen if getattr(r, sort) is None]
    present.sort(key=lambda r: getattr(r, sort), reverse=descending)
    ordered = present + missing
    return len(ordered), ordered[offset : offset + limit]
