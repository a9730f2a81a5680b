"""Regularized evolution (Real et al., 2019): tournament selection, one mutation, the oldest dies.

The strong simple baseline of the NAS literature. Ageing (removing the oldest rather than the worst)
keeps the population from clinging to an architecture that scored well by luck. Asynchronous by
construction: a child is bred from whatever population exists when a proposal is asked for.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from search_spaces.searchers.base import Searcher, register_searcher
from search_spaces.searchers.options import EvolutionOptions
from search_spaces.tokens import TokenSpace, sample_uniform

__all__ = ["RegularizedEvolution", "mutate"]


def mutate(space: TokenSpace, parent: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    """Change one position to another allowed choice, then repair later positions the masks now forbid."""
    tokens = list(parent)
    positions = [p for p in range(len(tokens)) if int(space.mask(p, tokens[:p]).sum()) > 1]
    if not positions:
        return tuple(tokens)
    position = int(rng.choice(positions))
    allowed = np.flatnonzero(space.mask(position, tokens[:position]))
    others = allowed[allowed != tokens[position]]
    tokens[position] = int(rng.choice(others)) if len(others) else tokens[position]
    for later in range(position + 1, len(tokens)):
        mask = space.mask(later, tokens[:later])
        if not mask[tokens[later]]:
            tokens[later] = int(rng.choice(np.flatnonzero(mask)))
    return tuple(tokens)


@register_searcher("regularized_evolution", options=EvolutionOptions)
class RegularizedEvolution(Searcher):
    """``population_size`` random architectures first, then children of the best of ``sample_size``."""

    def __init__(
        self,
        space: TokenSpace,
        seed: int | None = None,
        *,
        population_size: int = 50,
        sample_size: int = 10,
        **options: Any,
    ):
        super().__init__(space, seed, **options)
        if not 1 <= sample_size <= population_size:
            raise ValueError(f"need 1 <= sample_size ({sample_size}) <= population_size ({population_size})")
        self.population_size = population_size
        self.sample_size = sample_size
        self.population: deque[tuple[tuple[int, ...], float]] = deque()
        self.num_proposed = 0

    def _propose(self) -> tuple[int, ...]:
        self.num_proposed += 1
        if self.num_proposed <= self.population_size or not self.population:
            return sample_uniform(self.space, self.rng)
        size = min(self.sample_size, len(self.population))
        picks = self.rng.choice(len(self.population), size=size, replace=False)
        parent = max((self.population[int(i)] for i in picks), key=lambda member: member[1])[0]
        return mutate(self.space, parent, self.rng)

    def _observe(self, proposal_id, tokens, reward, failed, constraint=None, objective=None) -> None:
        self.population.append((tokens, reward))
        while len(self.population) > self.population_size:
            self.population.popleft()

    def _get_state(self) -> Any:
        return {"population": list(self.population), "num_proposed": self.num_proposed}

    def _set_state(self, state: Any) -> None:
        self.population = deque(state["population"])
        self.num_proposed = state["num_proposed"]
