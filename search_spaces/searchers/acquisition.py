"""What a model-guided searcher imagines before it spends a trial: a reward model and an acquisition.

:class:`RewardModel` keeps every architecture a searcher has learnt from: tokens, reward, where the
trial measured latency before training the latency constraint (``<= 0`` meets the target), and where
the trial reported it the objective the reward was computed from (accuracy, mIoU). It fits a
:class:`~.surrogate.HammingGP` to the objective, and a second one to the constraints once there are
enough of them: the objective and the constraint are modelled apart, as constrained Bayesian
optimisation does (Gardner et al. 2014), because a latency-penalised reward mixes them. A reward that
scales a slow, accurate architecture down teaches a model of the reward that what makes architectures
accurate is bad, inside the feasible region too: on NAS-Bench-201 (``bench/searchers.py``'s table, 50
random architectures, the hard reward at each device's median latency) a GP of the reward ranked the
feasible architectures' accuracy with a Spearman of -0.02 to 0.28 across the six devices, one of the
accuracy 0.41 to 0.51. Where no trial reports an objective the model fits the reward; where some do,
it fits those (a trial pruned for latency before training has none, and the constraint model still
learns from it).

Hyper-parameters (and the leave-one-out quality that decides whether the model is trusted) are chosen
by marginal likelihood when :meth:`RewardModel.refit` is called; between refits each new observation
extends the Cholesky factors by one row (O(n^2)), so scoring a pool of a few hundred candidates stays
a few milliseconds at 500 observations.

The acquisition is ``log EI(x) + log P(feasible | x)``: expected improvement over the best feasible
objective seen, times the probability that the constraint model puts the architecture under the target
(constrained EI); without constraints it is ``log EI``. Logs, so a searcher can add its own prior (PPO
adds ``beta * log pi(x)``).

:func:`one_edit_neighbours` gives the architectures one token away from a given one (later positions
repaired where the masks now forbid them): the local moves BANANAS and local search score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_ndtr

from search_spaces.searchers.surrogate import HammingGP, log_expected_improvement
from search_spaces.tokens import TokenSpace

__all__ = ["RewardModel", "one_edit_neighbours"]


def one_edit_neighbours(space: TokenSpace, tokens: tuple[int, ...], rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Every sequence that differs from ``tokens`` at one position (plus the repairs the masks require).

    A later token that is still allowed is kept; one that is not is drawn among the allowed choices
    with ``rng``. A space with an ``allows(position, prefix, token)`` method (NAS-FPN) answers the first
    question without building the mask."""
    allows = getattr(space, "allows", None) or (lambda position, prefix, token: space.mask(position, prefix)[token])
    out = []
    for position in range(len(tokens)):
        allowed = np.flatnonzero(space.mask(position, list(tokens[:position])))
        for choice in allowed:
            if choice == tokens[position]:
                continue
            new = [*tokens[:position], int(choice)]
            for later in range(position + 1, len(tokens)):
                keep = tokens[later]
                if not allows(later, new, keep):
                    keep = int(rng.choice(np.flatnonzero(space.mask(later, new))))
                new.append(keep)
            out.append(tuple(new))
    return out


class RewardModel:
    """Observations, the GP reward and constraint models over them, and the acquisition (see module doc).

    ``min_points``: observations (with an objective, when the model fits objectives) before the model
    is fitted; ``min_quality``: the leave-one-out Spearman below which :meth:`ready` says the model
    should not be used.
    """

    def __init__(self, min_points: int = 10, min_quality: float = 0.2):
        self.min_points, self.min_quality = min_points, min_quality
        self.tokens: list[tuple[int, ...]] = []
        self.rewards: list[float] = []
        self.constraints: list[float | None] = []
        self.objectives: list[float | None] = []
        self.on_objective = False  # what the reward GP fitted at the last refit: objectives or rewards
        # (observations, theta, noise, quality) of the reward GP and (observations, theta, noise) of the
        # constraint GP at the last refit: state, so a restored model is rebuilt exactly
        self.fit_at: tuple[int, float, float, float] | None = None
        self.constraint_fit_at: tuple[int, float, float] | None = None
        self._gps: tuple[HammingGP | None, HammingGP | None, int] | None = None  # a cache, not state

    def __len__(self) -> int:
        return len(self.tokens)

    def add(
        self, tokens: tuple[int, ...], reward: float, constraint: float | None = None, objective: float | None = None
    ) -> None:
        self.tokens.append(tuple(int(t) for t in tokens))
        self.rewards.append(float(reward))
        self.constraints.append(None if constraint is None else float(constraint))
        self.objectives.append(None if objective is None else float(objective))
        if objective is not None and self.fit_at is not None and not self.on_objective:
            self.refit()  # the first objective: the reward GP fits objectives from now on

    def _modelled(self, i: int, on_objective: bool) -> float | None:
        """What the reward GP fits for observation ``i``: its objective or its reward (None: not fitted)."""
        return self.objectives[i] if on_objective else self.rewards[i]

    def _fitted(self, upto: int, on_objective: bool) -> tuple[list[int], np.ndarray]:
        """Indices among the first ``upto`` observations the reward GP fits, and their values."""
        index = [i for i in range(upto) if self._modelled(i, on_objective) is not None]
        return index, np.array([self._modelled(i, on_objective) for i in index], dtype=np.float64)

    @property
    def quality(self) -> float | None:
        return None if self.fit_at is None else self.fit_at[3]

    def ready(self) -> bool:
        """Fitted, and ranking held-out architectures at least as well as ``min_quality`` asks."""
        return self.fit_at is not None and self.fit_at[3] >= self.min_quality

    def refit(self) -> None:
        """Choose both models' hyper-parameters by marginal likelihood on everything observed so far."""
        on_objective = any(o is not None for o in self.objectives)
        index, values = self._fitted(len(self.tokens), on_objective)
        if len(index) < self.min_points:
            if on_objective != self.on_objective:  # too few objectives yet: not fitted until there are
                self.on_objective, self.fit_at, self.constraint_fit_at, self._gps = on_objective, None, None, None
            return
        reward_gp = HammingGP().fit(np.array([self.tokens[i] for i in index]), values)
        self.on_objective = on_objective
        self.fit_at = (len(self.tokens), float(reward_gp.theta), float(reward_gp.noise), float(reward_gp.quality))
        known = [i for i, c in enumerate(self.constraints) if c is not None]
        constraint_gp = None
        if len(known) >= self.min_points:
            values = np.array([self.constraints[i] for i in known])
            constraint_gp = HammingGP().fit(np.array([self.tokens[i] for i in known]), values)
            self.constraint_fit_at = (len(self.tokens), float(constraint_gp.theta), float(constraint_gp.noise))
        self._gps = (reward_gp, constraint_gp, len(self.tokens))

    def _models(self) -> tuple[HammingGP, HammingGP | None]:
        """The two GPs over every observation: the cached ones, extended by the observations since."""
        assert self.fit_at is not None
        if self._gps is None:  # restored: factorise at the last refit, then replay the extensions
            n, theta, noise, quality = self.fit_at
            index, values = self._fitted(n, self.on_objective)
            reward_gp = HammingGP().fit(np.array([self.tokens[i] for i in index]), values, theta, noise)
            reward_gp.quality = quality
            constraint_gp = None
            if self.constraint_fit_at is not None:
                m, theta, noise = self.constraint_fit_at
                known = [i for i in range(m) if self.constraints[i] is not None]
                values = np.array([self.constraints[i] for i in known])
                constraint_gp = HammingGP().fit(np.array([self.tokens[i] for i in known]), values, theta, noise)
            self._gps = (reward_gp, constraint_gp, n)
        reward_gp, constraint_gp, done = self._gps
        for i in range(done, len(self.tokens)):
            value = self._modelled(i, self.on_objective)
            if value is not None:
                reward_gp.extend(self.tokens[i], value)
            if constraint_gp is not None and self.constraints[i] is not None:
                constraint_gp.extend(self.tokens[i], self.constraints[i])
        self._gps = (reward_gp, constraint_gp, len(self.tokens))
        return reward_gp, constraint_gp

    def best_feasible(self) -> float | None:
        """The best modelled value (objective or reward) among observations that met the constraint (or
        whose constraint is unknown)."""
        feasible = [
            value for i, c in enumerate(self.constraints)
            if (c is None or c <= 0) and (value := self._modelled(i, self.on_objective)) is not None
        ]
        return max(feasible) if feasible else None

    def log_acquisition(self, tokens: np.ndarray, xi: float = 0.0) -> np.ndarray:
        """``log EI(x) + log P(constraint(x) <= 0)`` at each row of ``tokens`` [m, K] (see the module doc).

        With no feasible observation yet, EI has no incumbent and only the feasibility term ranks.
        ``xi`` (>= 0, in the units of what is modelled) raises the incumbent EI measures improvement
        over: the larger, the more EI favours where the model is unsure over small predicted gains near
        the best.
        """
        reward_gp, constraint_gp = self._models()
        tokens = np.asarray(tokens, dtype=np.int64)
        score = np.zeros(len(tokens))
        best = self.best_feasible()
        if best is not None:
            mean, std = reward_gp.predict(tokens)
            score += log_expected_improvement(mean, std, best + xi)
        if constraint_gp is not None:
            mean, std = constraint_gp.predict(tokens)
            score += log_ndtr(-mean / std)
        return score

    # -- state ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "rewards": list(self.rewards),
            "constraints": list(self.constraints),
            "objectives": list(self.objectives),
            "on_objective": self.on_objective,
            "fit_at": self.fit_at,
            "constraint_fit_at": self.constraint_fit_at,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.tokens, self.rewards = list(state["tokens"]), list(state["rewards"])
        self.constraints = list(state["constraints"])
        # states saved before objectives were modelled fitted rewards
        self.objectives = list(state.get("objectives", [None] * len(self.tokens)))
        self.on_objective = bool(state.get("on_objective", False))
        self.fit_at, self.constraint_fit_at = state["fit_at"], state["constraint_fit_at"]
        self._gps = None
