"""Reading one prediction window and blending window probabilities into a scene, strip by strip.

Both prediction paths use these two pieces, so a mask written by the Ray Data job
(:mod:`trainers.batch_predict`) and one written in-process (:func:`trainers.predict.predict_scene`)
are the same pixels: the same normalisation and nodata rule when a window is read, the same
weights and the same order of additions when windows are blended.

Memory holds one strip (``tile`` rows × scene width) whatever the scene's size: windows arrive in the
grid's row-major order, and a strip's rows are handed to the sink as soon as no later window covers them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rasterio.windows import Window

from search_spaces.errors import DataError

from .tiling import SceneGrid

__all__ = ["NODATA_CLASS", "read_window", "StripBlender", "StripSink"]

NODATA_CLASS = 255

#: ``sink(row offset, labels [rows, width] uint8, probabilities ×255 [classes, rows, width] uint8 or None)``
StripSink = Callable[[int, np.ndarray, np.ndarray | None], None]


def read_window(
    src, band_indexes: Sequence[int], y: int, x: int, tile: int, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The normalised ``[bands, tile, tile]`` float32 window at ``(y, x)`` and its ``[tile, tile]`` valid mask.

    ``mean``/``std`` are ``[bands, 1, 1]``. A pixel is valid unless every band is masked (nodata, or
    outside the scene); invalid pixels are 0 after normalisation, so nodata never looks like data.
    """
    data = src.read(list(band_indexes), window=Window(x, y, tile, tile), boundless=True, fill_value=0, masked=True)
    present = ~np.ma.getmaskarray(data).all(axis=0)
    image = (np.ma.filled(data, 0).astype(np.float32) - mean) / std
    image[:, ~present] = 0.0
    return image, present


class StripBlender:
    """Blends per-window class probabilities (fed in ``grid.windows()`` order) into finished strips.

    Each window's probabilities are weighted by the grid's blend weights (high in the middle, low at
    the edges), summed where windows overlap and divided by the summed weights; a pixel no window saw
    as valid is :data:`NODATA_CLASS`.
    """

    def __init__(self, grid: SceneGrid, num_classes: int, sink: StripSink, *, probabilities: bool = False) -> None:
        self.grid, self.num_classes, self.sink, self.probabilities = grid, num_classes, sink, probabilities
        self.weights = grid.weights
        t, width = grid.tile, grid.width
        self._acc = np.zeros((num_classes, t, width), np.float64)
        self._wsum = np.zeros((t, width), np.float64)
        self._valid = np.zeros((t, width), bool)
        self._top = 0  # the scene row the strip starts at
        self._row = 0  # index into grid.rows of the windows being added
        self._in_row = 0
        self.windows_done = 0

    def add(self, y: int, x: int, probs: np.ndarray, present: np.ndarray) -> None:
        """Add one window's ``[classes, tile, tile]`` probabilities and ``[tile, tile]`` valid mask."""
        rows, cols = self.grid.rows, self.grid.cols
        if self._in_row == len(cols):  # the previous row of windows is complete: flush what it finished
            self._next_row()
        if y != rows[self._row] or x != cols[self._in_row]:
            expected = (rows[self._row], cols[self._in_row])
            raise DataError(f"window ({y}, {x}) arrived out of order; the blender expected {expected}")
        t, height, width = self.grid.tile, self.grid.height, self.grid.width
        h_in, w_in = min(t, height - y), min(t, width - x)
        sl = np.s_[:h_in, x : x + w_in]
        weights = self.weights[:h_in, :w_in]
        self._acc[(slice(None), *sl)] += probs[:, :h_in, :w_in] * weights
        self._wsum[sl] += weights
        self._valid[sl] |= present[:h_in, :w_in]
        self._in_row += 1
        self.windows_done += 1

    def finish(self) -> None:
        """Flush the last strip; every window of the grid must have been added."""
        if self.windows_done != len(self.grid):
            raise DataError(f"the scene has {len(self.grid)} windows; {self.windows_done} were blended")
        y = self.grid.rows[-1]
        self._flush(y, min(self.grid.tile, self.grid.height - y))

    def _next_row(self) -> None:
        rows = self.grid.rows
        y, y_next = rows[self._row], rows[self._row + 1]
        self._flush(y, y_next - y)
        shift, width = y_next - self._top, self.grid.width
        # shift the strip so that it starts at the next row of windows
        self._acc = np.concatenate([self._acc[:, shift:], np.zeros((self.num_classes, shift, width))], axis=1)
        self._wsum = np.concatenate([self._wsum[shift:], np.zeros((shift, width))], axis=0)
        self._valid = np.concatenate([self._valid[shift:], np.zeros((shift, width), bool)], axis=0)
        self._top = y_next
        self._row += 1
        self._in_row = 0

    def _flush(self, y: int, rows: int) -> None:
        p = self._acc[:, :rows] / np.maximum(self._wsum[:rows], 1e-9)
        labels = p.argmax(0).astype(np.uint8)
        labels[~self._valid[:rows]] = NODATA_CLASS
        probs = np.clip(np.round(p * 255), 0, 255).astype(np.uint8) if self.probabilities else None
        self.sink(y, labels, probs)
