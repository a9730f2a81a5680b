"""No architecture is trained twice: duplicates are answered from a cache of rewards.

:class:`Deduplicated` wraps any searcher and is itself a searcher, so the tabular loop and the Ray
Tune adapter use it the same way. When the inner searcher proposes an architecture (by
``space.canonical``) that was already observed, its cached reward is fed straight back and the inner
searcher is asked again; one that is still being trained is linked to the running trial and gets the
same reward when it arrives. After ``max_retries`` duplicates in a row (a policy that has converged),
it proposes the nearest unseen neighbour of the last duplicate (one, then two, ... mutations; uniform
draws as the last resort), so the search keeps moving where the searcher was looking. The inner
searcher does not learn from those (it did not propose them); ``stats["explored"]`` counts them.
A duplicate is answered with the latency constraint and the objective of its first trial too, where
those were known.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from search_spaces.errors import SpecError
from search_spaces.searchers.base import Proposal, Searcher, is_failed
from search_spaces.searchers.evolution import mutate
from search_spaces.tokens import TokenSpace, sample_uniform

__all__ = ["Deduplicated"]


class Deduplicated:
    """A searcher wrapper: same ``propose``/``observe``/``state_dict`` contract, no duplicate trials.

    ``cache``: rewards observed per canonical architecture (also those of failed trials, as ``None``:
    a failed architecture is not retried). ``stats`` counts cache hits and fallback proposals.
    """

    def __init__(self, inner: Searcher, *, max_retries: int = 5, explore_tries: int = 200):
        if isinstance(inner, Deduplicated):
            raise SpecError("searcher is already deduplicated; wrap it once")
        self.inner = inner
        self.space: TokenSpace = inner.space
        self.max_retries = max_retries
        self.explore_tries = explore_tries
        self.rng = np.random.default_rng(None if inner.seed is None else inner.seed + 7919)
        self.cache: dict[str, float | None] = {}
        self.constraints: dict[str, float] = {}  # canonical -> latency constraint, where the trial knew it
        self.objectives: dict[str, float] = {}  # canonical -> objective (accuracy), where the trial reported it
        self.running: dict[str, str] = {}  # canonical -> outer proposal id
        self.pending: dict[str, tuple[str, list[str]]] = {}  # outer id -> (canonical, inner ids fed with it)
        self.stats = {"cache_hits": 0, "linked": 0, "explored": 0}
        self._explore_id = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def _feed(self, inner_id: str, reward: float | None, key: str) -> None:
        self.inner.observe(inner_id, reward, self.constraints.get(key), self.objectives.get(key))

    def propose(self) -> Proposal | None:
        last = None
        for _ in range(self.max_retries):
            proposal = self.inner.propose()
            if proposal is None:
                return None
            last = proposal.tokens
            key = self.space.canonical(proposal.tokens)
            if key in self.cache:
                self.stats["cache_hits"] += 1
                self._feed(proposal.id, self.cache[key], key)
            elif key in self.running:
                self.stats["linked"] += 1
                self.pending[self.running[key]][1].append(proposal.id)
            else:
                self.running[key] = proposal.id
                self.pending[proposal.id] = (key, [proposal.id])
                return proposal
        return self._explore(last)

    def _explore(self, near: tuple[int, ...] | None) -> Proposal | None:
        for attempt in range(2 * self.explore_tries):
            if near is not None and attempt < self.explore_tries:
                tokens = near
                for _ in range(1 + attempt * len(self.space.sizes) // self.explore_tries):
                    tokens = mutate(self.space, tokens, self.rng)
            else:
                tokens = sample_uniform(self.space, self.rng)
            key = self.space.canonical(tokens)
            if key not in self.cache and key not in self.running:
                self._explore_id += 1
                proposal = Proposal(id=f"explore-{self._explore_id}", tokens=tokens)
                self.stats["explored"] += 1
                self.running[key] = proposal.id
                self.pending[proposal.id] = (key, [])
                return proposal
        return None

    def observe(
        self, proposal_id: str, reward: float | None, constraint: float | None = None,
        objective: float | None = None,
    ) -> None:
        if proposal_id not in self.pending:
            raise SpecError(f"proposal {proposal_id!r} is not pending; observe each proposal once")
        key, inner_ids = self.pending.pop(proposal_id)
        del self.running[key]
        self.cache[key] = None if is_failed(reward) else float(reward)  # type: ignore[arg-type]
        if constraint is not None:
            self.constraints[key] = float(constraint)
        if objective is not None and not is_failed(reward) and not is_failed(objective):
            self.objectives[key] = float(objective)
        for inner_id in inner_ids:
            self._feed(inner_id, reward, key)

    def state_dict(self) -> bytes:
        return pickle.dumps(
            {
                "inner": self.inner.state_dict(),
                "rng": self.rng.bit_generator.state,
                "cache": self.cache,
                "constraints": self.constraints,
                "objectives": self.objectives,
                "running": self.running,
                "pending": self.pending,
                "stats": self.stats,
                "explore_id": self._explore_id,
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    def load_state_dict(self, data: bytes) -> None:
        state: dict[str, Any] = pickle.loads(data)
        self.inner.load_state_dict(state["inner"])
        self.rng.bit_generator.state = state["rng"]
        self.cache = state["cache"]
        self.constraints = state.get("constraints", {})
        self.objectives = state.get("objectives", {})
        self.running = state["running"]
        self.pending = state["pending"]
        self.stats = state["stats"]
        self._explore_id = state["explore_id"]
