"""Optuna's ``GPSampler``: Gaussian-process Bayesian optimisation, with the latency target as a constraint.

The sampler fits a GP to the rewards (and, where each result carries the latency constraint, a second
GP to the constraint) and proposes the maximiser of log expected improvement times the probability
of meeting the target (Optuna's constrained LogEI). Token positions map to categorical parameters as
for TPE (:class:`~.tpe.OptunaSearcher`). Optuna 5 sets constraints per trial (``Trial.set_constraint``;
the ``constraints_func`` argument is deprecated there), which the adapter does as results arrive.
Sample-efficient and slow: its acquisition optimisation costs about 0.2-0.5 s per proposal after a
few hundred trials on one core.
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces.searchers.base import register_searcher
from search_spaces.searchers.options import GPOptions
from search_spaces.searchers.tpe import OptunaSearcher
from search_spaces.tokens import TokenSpace

__all__ = ["GPSearcher"]


@register_searcher("gp", options=GPOptions)
class GPSearcher(OptunaSearcher):
    """Optuna's ``GPSampler`` (options pass through: ``n_startup_trials``, ``deterministic_objective``)."""

    constraints = True

    def __init__(
        self, space: TokenSpace, seed: int | None = None, *, failure_reward: float | None = None, **gp_options: Any
    ):
        super().__init__(space, seed, failure_reward=failure_reward, **gp_options)

    def _sampler(self, seed: int, options: dict[str, Any]) -> optuna.samplers.BaseSampler:
        import warnings

        with warnings.catch_warnings():  # deterministic_objective is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, **options)
