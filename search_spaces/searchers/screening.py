"""Model screening for any searcher: ask it for several candidates, send the one the reward model likes best.

:class:`Screened` wraps a searcher and is itself one, so the tabular loop, the dedup wrapper and the Ray
Tune adapter use it as they use any other. Once its :class:`~.acquisition.RewardModel` (a Gaussian
process over every architecture observed) ranks held-out architectures well, each proposal asks the
inner searcher for ``pool`` candidates, scores them by ``log EI + log P(feasible)`` (EI of the objective
the trials report, where they do, modelled apart from the latency constraint) and sends the best;
the others are withdrawn (:meth:`~.base.Searcher.withdraw`), so the inner searcher is told exactly
which of its proposals was evaluated and learns from that one's reward alone. Before then, and when a
searcher has nothing more to offer, proposals pass through unchanged. The model's hyper-parameters are
chosen every ``refit_every`` observations; in between it grows by one Cholesky row per observation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from search_spaces.errors import SpecError
from search_spaces.searchers.acquisition import RewardModel
from search_spaces.searchers.base import Proposal, Searcher

__all__ = ["Screened"]


class Screened(Searcher):
    """A searcher wrapper (see the module docstring); ``name`` is the inner one's plus ``+screened``."""

    def __init__(
        self,
        inner: Searcher,
        *,
        pool: int = 8,
        min_points: int = 10,
        min_quality: float = 0.2,
        refit_every: int = 10,
    ):
        if not isinstance(inner, Searcher) or isinstance(inner, Screened):
            raise SpecError("Screened wraps one searcher (not a deduplicated or screened one); wrap it once")
        if pool < 1 or refit_every < 1:
            raise SpecError(f"pool and refit_every must be >= 1, not {pool} and {refit_every}")
        super().__init__(inner.space, inner.seed, failure_reward=inner._failure_reward)
        self.inner = inner
        self.name = f"{inner.name}+screened"
        self.pool, self.refit_every = pool, refit_every
        self.model = RewardModel(min_points, min_quality)
        self.learned: set[str] = set()  # canonical keys in the model (a duplicate is learnt from once)
        self.refitted_at = 0
        self._inner_ids: dict[str, str] = {}  # outer proposal id -> the inner searcher's
        self._chosen: Proposal | None = None

    def _propose(self) -> tuple[int, ...] | None:
        if not self.model.ready():
            self._chosen = self.inner.propose()
            return None if self._chosen is None else self._chosen.tokens
        candidates = []
        for _ in range(self.pool):
            proposal = self.inner.propose()
            if proposal is None:
                break
            candidates.append(proposal)
        if not candidates:
            return None
        scores = self.model.log_acquisition(np.array([c.tokens for c in candidates]))
        best = int(np.argmax(scores))
        for i, candidate in enumerate(candidates):
            if i != best:
                self.inner.withdraw(candidate.id)
        self._chosen = candidates[best]
        return self._chosen.tokens

    def _after_propose(self, proposal: Proposal) -> None:
        assert self._chosen is not None
        self._inner_ids[proposal.id] = self._chosen.id

    def _observe(self, proposal_id, tokens, reward, failed, constraint=None, objective=None) -> None:
        self.inner.observe(self._inner_ids.pop(proposal_id), None if failed else reward, constraint, objective)
        key = self.space.canonical(tokens)
        if key in self.learned:
            return
        self.learned.add(key)
        self.model.add(tokens, reward, constraint, objective)
        if len(self.model) >= self.model.min_points and len(self.model) - self.refitted_at >= self.refit_every:
            self.model.refit()
            self.refitted_at = len(self.model)

    def _withdraw(self, proposal_id: str, tokens: tuple[int, ...]) -> None:
        self.inner.withdraw(self._inner_ids.pop(proposal_id))

    def _get_state(self) -> Any:
        return {
            "inner": self.inner.state_dict(),
            "model": self.model.state(),
            "learned": set(self.learned),
            "refitted_at": self.refitted_at,
            "inner_ids": dict(self._inner_ids),
        }

    def _set_state(self, state: Any) -> None:
        self.inner.load_state_dict(state["inner"])
        self.model.load(state["model"])
        self.learned = set(state["learned"])
        self.refitted_at = state["refitted_at"]
        self._inner_ids = dict(state["inner_ids"])
