"""Where windows start when a scene is covered by square tiles, and how overlapping tiles are weighted.

The importer cuts training chips and both prediction paths (``predict_scene`` in-process, the Ray Data
job of :mod:`trainers.batch_predict`) read inference tiles over the same kind of scene; all step
regularly and shift the last window back to end at the scene's edge, so no window runs past it and
nothing needs padding unless the scene is smaller than one tile. :class:`SceneGrid` is the one
description of a scene's prediction windows that both prediction paths use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from search_spaces.errors import DataError

__all__ = ["tile_starts", "blend_weights", "SceneGrid"]


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Window offsets covering ``[0, length)``: every ``step`` px, the last shifted to end at the edge.

    A scene no longer than ``tile`` gets the single offset 0. ``step`` must be positive.
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """A [tile, tile] weight: 1 in the middle, ramping down over ``overlap`` px towards each edge."""
    ramp = np.ones(tile, np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return np.outer(ramp, ramp)


@dataclass(frozen=True)
class SceneGrid:
    """The prediction windows of one scene: square ``tile`` px windows, ``overlap`` px shared, row-major.

    ``tile`` is the side actually read (the requested side, or the scene's longer side when the scene
    is smaller); a window may reach past a short scene's edge and is then read boundless.
    """

    height: int
    width: int
    tile: int
    overlap: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def of(cls, height: int, width: int, tile: int, overlap: int) -> SceneGrid:
        if overlap * 2 >= tile:
            raise DataError(f"overlap {overlap} px must be less than half the tile ({tile} px)")
        t = min(tile, max(height, width))
        stride = t - overlap
        rows, cols = tuple(tile_starts(height, t, stride)), tuple(tile_starts(width, t, stride))
        return cls(height, width, t, overlap, rows, cols)

    @property
    def weights(self) -> np.ndarray:
        # no ramp when the scene fits one tile in either direction: its single window has no neighbour there
        return blend_weights(self.tile, self.overlap if min(self.height, self.width) > self.tile else 0)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def windows(self) -> Iterator[tuple[int, int]]:
        """``(row offset, column offset)`` of every window, row by row, left to right."""
        for y in self.rows:
            for x in self.cols:
                yield y, x
