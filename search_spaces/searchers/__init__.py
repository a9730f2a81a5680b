"""Searchers: propose token sequences, learn from rewards; nothing here knows about Ray.

The built-in searchers (``random``, ``ppo``, ``tpe``, ``gp``, ``regularized_evolution``) register when a
searcher is first created or listed, so importing the package costs no torch or Optuna: the API reads each
searcher's options model (:mod:`.options`) at submission. Two wrappers work with any of them:
:class:`Deduplicated` (no architecture trained twice) and :class:`Screened` (a reward model picks the
best of several candidates). The Ray Tune adapter lives in
:mod:`search_spaces.searchers.tune` (imported on demand, it pulls in Ray).
"""

from search_spaces.searchers.base import (
    Proposal,
    Searcher,
    create_searcher,
    is_failed,
    list_searchers,
    register_searcher,
)
from search_spaces.searchers.dedup import Deduplicated
from search_spaces.searchers.screening import Screened
from search_spaces.searchers.tabular import SearchTrace, TableSpace, run_search

__all__ = [
    "Proposal",
    "Searcher",
    "Deduplicated",
    "Screened",
    "TableSpace",
    "SearchTrace",
    "create_searcher",
    "is_failed",
    "list_searchers",
    "register_searcher",
    "run_search",
]
