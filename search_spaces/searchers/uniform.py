"""Random search: every position uniform among its allowed choices — the baseline every searcher must beat."""

from __future__ import annotations

from search_spaces.searchers.base import Searcher, register_searcher
from search_spaces.searchers.options import RandomOptions
from search_spaces.tokens import TokenSpace, sample_uniform

__all__ = ["RandomSearcher"]


@register_searcher("random", options=RandomOptions)
class RandomSearcher(Searcher):
    """Proposes independent uniform samples; learns nothing, never waits."""

    def __init__(self, space: TokenSpace, seed: int | None = None, **options):
        super().__init__(space, seed, **options)

    def _propose(self) -> tuple[int, ...]:
        return sample_uniform(self.space, self.rng)

    def _observe(self, proposal_id, tokens, reward, failed, constraint=None, objective=None) -> None:
        return None
