"""Searchers: propose token sequences, learn from rewards; nothing here knows about Ray.

Importing the package registers ``random``, ``ppo``, ``tpe`` and ``regularized_evolution``. The Ray
Tune adapter lives in :mod:`search_spaces.searchers.tune` (imported on demand, it pulls in Ray).
"""

from search_spaces.searchers import evolution, ppo, tpe, uniform  # noqa: F401  (registration)
from search_spaces.searchers.base import (
    Proposal,
    Searcher,
    create_searcher,
    is_failed,
    list_searchers,
    register_searcher,
)
from search_spaces.searchers.dedup import Deduplicated
from search_spaces.searchers.tabular import SearchTrace, TableSpace, run_search

__all__ = [
    "Proposal",
    "Searcher",
    "Deduplicated",
    "TableSpace",
    "SearchTrace",
    "create_searcher",
    "is_failed",
    "list_searchers",
    "register_searcher",
    "run_search",
]
