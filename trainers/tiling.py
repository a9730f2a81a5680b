"""Where windows start when a scene is covered by square tiles: one rule for cutting and predicting.

The importer cuts training chips and ``predict_scene`` reads inference tiles over the same kind of
scene; both step regularly and shift the last window back to end at the scene's edge, so no
window runs past it and nothing needs padding unless the scene is smaller than one tile.
"""

from __future__ import annotations

__all__ = ["tile_starts"]


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
