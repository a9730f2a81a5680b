"""TPE through Optuna's ask/tell interface — Optuna's sampler, not a re-implementation.

Each token position is one categorical parameter. A position whose allowed choices depend on the
prefix (a mask) becomes a parameter named after its allowed set, so every Optuna parameter keeps one
fixed distribution (Optuna requires that) and TPE models each conditional branch separately.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

import numpy as np
import optuna

from search_spaces.searchers.base import Proposal, Searcher, register_searcher
from search_spaces.searchers.options import TPEOptions
from search_spaces.tokens import TokenSpace

__all__ = ["TPESearcher"]


@register_searcher("tpe", options=TPEOptions)
class TPESearcher(Searcher):
    """Optuna's ``TPESampler`` (options pass through: ``n_startup_trials``, ``multivariate``, ...)."""

    def __init__(
        self,
        space: TokenSpace,
        seed: int | None = None,
        *,
        failure_reward: float | None = None,
        **tpe_options: Any,
    ):
        super().__init__(space, seed, failure_reward=failure_reward)
        optuna.logging.set_verbosity(logging.WARNING)
        sampler_seed = int(self.rng.integers(2**31 - 1)) if seed is None else seed
        self.study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed, **tpe_options)
        )
        self._trial_numbers: dict[str, int] = {}
        self._last_trial: int | None = None

    def _propose(self) -> tuple[int, ...]:
        trial = self.study.ask()
        tokens: list[int] = []
        for position in range(len(self.space.sizes)):
            mask = np.asarray(self.space.mask(position, tokens), dtype=bool)
            allowed = [int(i) for i in np.flatnonzero(mask)]
            if len(allowed) == 1:
                tokens.append(allowed[0])
                continue
            name = (
                f"t{position}" if mask.all() else f"t{position}_" + "".join("1" if m else "0" for m in mask)
            )
            tokens.append(int(trial.suggest_categorical(name, allowed)))
        self._last_trial = trial.number
        return tuple(tokens)

    def _after_propose(self, proposal: Proposal) -> None:
        assert self._last_trial is not None
        self._trial_numbers[proposal.id] = self._last_trial

    def _observe(self, proposal_id: str, tokens: tuple[int, ...], reward: float, failed: bool) -> None:
        # A failed trial is told as its penalty value, not as FAIL: TPE should learn the region is bad.
        self.study.tell(self._trial_numbers.pop(proposal_id), reward)

    def _get_state(self) -> Any:
        return pickle.dumps({"study": self.study, "trials": self._trial_numbers})

    def _set_state(self, state: Any) -> None:
        loaded = pickle.loads(state)
        self.study = loaded["study"]
        self._trial_numbers = loaded["trials"]
