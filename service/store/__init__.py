"""The store: SQLAlchemy tables and the only functions that read or write them.

SQLite file by default, any SQLAlchemy URL (PostgreSQL in a cluster) through settings. Every write
goes through a transition check (see :mod:`service.states`) and trial writes are idempotent on the
trial id, so a restarted driver cannot duplicate or regress a result.

One :class:`Store`, composed of one class per aggregate:

- ``schema``: the tables (``Base`` and its classes) and ``migrate``;
- ``engine``: the main and the reader engines; ``versions``: the write counters a flush moves;
- ``core``: sessions, transactions, ``on_write``, the checked update, the retried read, ``write_version``;
- ``experiments``, ``trials`` (with trial pages and the leaderboard's rows), ``models``, ``pretraining``,
  ``predictions``, ``tokens``: each aggregate's reads and writes; ``metrics``: the aggregates a scrape reads.
"""

from __future__ import annotations

from functools import lru_cache

from .engine import make_engine as _make_engine  # noqa: F401  (service.dbcli imports it by this name)
from .experiments import Experiments
from .metrics import Metrics
from .models import Models
from .predictions import Predictions
from .pretraining import Pretraining
from .schema import (
    ApiToken,
    Base,
    Experiment,
    Model,
    PredictionJob,
    PretrainingJob,
    StoreVersion,
    Trial,
    migrate,
    new_id,
)
from .tokens import Tokens
from .trials import PAGE_COLUMNS, Trials

__all__ = [
    "PAGE_COLUMNS", "Base", "Experiment", "Trial", "Model", "PretrainingJob", "PredictionJob", "ApiToken",
    "StoreVersion", "Store", "get_store", "migrate", "new_id",
]  # fmt: skip


class Store(Experiments, Trials, Models, Pretraining, Predictions, Tokens, Metrics):
    """All reads and writes of experiments, trials, models, pretraining jobs, prediction jobs and tokens."""


@lru_cache(maxsize=8)
def get_store(url: str) -> Store:
    return Store(url)
