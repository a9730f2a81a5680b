"""TPE through Optuna's ask/tell interface — Optuna's sampler, not a re-implementation.

Each token position is one categorical parameter. A position whose allowed choices depend on the
prefix (a mask) becomes a parameter named after its allowed set, so every Optuna parameter keeps one
fixed distribution (Optuna requires that) and TPE models each conditional branch separately.
:class:`OptunaSearcher` is that mapping for any Optuna sampler (``gp.py`` uses it for ``GPSampler``).
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

__all__ = ["OptunaSearcher", "TPESearcher"]


class OptunaSearcher(Searcher):
    """An Optuna study behind the searcher contract; subclasses say which sampler (``_sampler``).

    A withdrawn proposal is told to the study as ``FAIL`` (the samplers ignore failed trials); a failed
    one is told as its penalty value, so the sampler learns the region is bad. Where a result carries
    the latency constraint it is set on the trial (``constraints`` = True) for samplers that use it.
    """

    constraints = False

    def __init__(
        self, space: TokenSpace, seed: int | None = None, *, failure_reward: float | None = None, **sampler_options: Any
    ):
        super().__init__(space, seed, failure_reward=failure_reward)
        optuna.logging.set_verbosity(logging.WARNING)
        sampler_seed = int(self.rng.integers(2**31 - 1)) if seed is None else seed
        self.study = optuna.create_study(direction="maximize", sampler=self._sampler(sampler_seed, sampler_options))
        self._trials: dict[str, optuna.trial.Trial] = {}  # proposal id -> its trial, until told
        self._last_trial: optuna.trial.Trial | None = None
        self._constrained: bool | None = None  # decided by the first result: with a constraint or without

    def _sampler(self, seed: int, options: dict[str, Any]) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _propose(self) -> tuple[int, ...]:
        trial = self.study.ask()
        tokens: list[int] = []
        for position in range(len(self.space.sizes)):
            mask = np.asarray(self.space.mask(position, tokens), dtype=bool)
            allowed = [int(i) for i in np.flatnonzero(mask)]
            if len(allowed) == 1:
                tokens.append(allowed[0])
                continue
            name = f"t{position}" if mask.all() else f"t{position}_" + "".join("1" if m else "0" for m in mask)
            tokens.append(int(trial.suggest_categorical(name, allowed)))
        self._last_trial = trial
        return tuple(tokens)

    def _after_propose(self, proposal: Proposal) -> None:
        assert self._last_trial is not None
        self._trials[proposal.id] = self._last_trial

    def _observe(self, proposal_id, tokens, reward, failed, constraint=None, objective=None) -> None:
        trial = self._trials.pop(proposal_id)
        if self.constraints:
            if self._constrained is None:
                self._constrained = constraint is not None
            if self._constrained:  # Optuna needs the same constraints on every trial: unknown counts as met
                trial.set_constraint("latency", 0.0 if constraint is None else float(constraint))
        self.study.tell(trial, reward)

    def _withdraw(self, proposal_id: str, tokens: tuple[int, ...]) -> None:
        self.study.tell(self._trials.pop(proposal_id), state=optuna.trial.TrialState.FAIL)

    def _get_state(self) -> Any:
        # one pickle: the trials and the study they belong to stay one object graph
        return pickle.dumps({"study": self.study, "trials": self._trials, "constrained": self._constrained})

    def _set_state(self, state: Any) -> None:
        loaded = pickle.loads(state)
        self.study = loaded["study"]
        self._trials = loaded["trials"]
        self._constrained = loaded.get("constrained")


@register_searcher("tpe", options=TPEOptions)
class TPESearcher(OptunaSearcher):
    """Optuna's ``TPESampler`` (options pass through: ``n_startup_trials``, ``multivariate``, ...)."""

    def __init__(
        self, space: TokenSpace, seed: int | None = None, *, failure_reward: float | None = None, **tpe_options: Any
    ):
        super().__init__(space, seed, failure_reward=failure_reward, **tpe_options)

    def _sampler(self, seed: int, options: dict[str, Any]) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, **options)
