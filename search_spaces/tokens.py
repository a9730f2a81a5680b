"""Token spaces: the view of an architecture space that searchers see.

A token space is a fixed-length sequence of positions; position ``i`` has ``sizes[i]`` choices, and
which of them are allowed may depend on the tokens chosen before it (``mask``). Searchers know only
this protocol, so the same PPO controller runs over NAS-FPN cells and over a tabular benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["TokenSpace", "sample_uniform"]


@runtime_checkable
class TokenSpace(Protocol):
    """What a searcher needs to know about an architecture space."""

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of choices at each position (the largest, before masking)."""
        ...

    def mask(self, position: int, prefix: Sequence[int]) -> np.ndarray:
        """Boolean array of length ``sizes[position]``: the choices allowed after ``prefix``.

        ``prefix`` holds the tokens of positions ``0 .. position-1``. At least one entry is True.
        """
        ...

    def canonical(self, tokens: Sequence[int]) -> str:
        """A string equal for token sequences that describe the same architecture."""
        ...


def sample_uniform(space: TokenSpace, rng: np.random.Generator) -> tuple[int, ...]:
    """Draw one valid token sequence, uniformly at each position among the allowed choices."""
    tokens: list[int] = []
    for position in range(len(space.sizes)):
        allowed = np.flatnonzero(space.mask(position, tokens))
        tokens.append(int(rng.choice(allowed)))
    return tuple(tokens)
