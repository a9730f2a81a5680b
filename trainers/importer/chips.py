"""Cutting one checked pair into chips: windowed reading, mask decoding, georeferencing, chip files.

Memory: a GeoTIFF source is read one chip window at a time (never the whole scene); JPEG/PNG have
no random access, so they are read in strips of one chip row, top to bottom.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

from search_spaces.errors import DataError
from trainers._raster import nodata_pixels, open_raster, write_chip
from trainers.tiling import tile_starts

from .classes import ClassTable
from .masks import _MaskDecoder
from .pairs import _band_names, _safe_id, _Scene

#: ``_Cutter.crs_kinds`` entry of a source without a CRS (chips get a local pixel CRS).
_LOCAL = "local"


def _chip_windows(height: int, width: int, chip: int, step: int) -> Iterator[Window]:
    """Chip windows in row-major order (so strip readers only ever move down)."""
    cols = tile_starts(width, chip, step)
    for r in tile_starts(height, chip, step):
        for c in cols:
            yield Window(c, r, min(chip, width - c), min(chip, height - r))


class _Reader:
    """Reads chip windows from one raster.

    GeoTIFF: one window per chip (random access; the scene is never in memory). JPEG/PNG have no
    random access (GDAL re-decodes from the top to go back), so they are read forward through a
    rolling buffer of full-width rows: each row is decoded once, and at most one chip row plus the
    overlap is held.
    """

    def __init__(self, src, path: Path, indexes: list[int]) -> None:
        self.src, self.path, self.indexes = src, path, indexes
        self.per_window = src.driver == "GTiff"
        self._top = 0
        self._buf: np.ndarray | None = None

    def _load(self, window: Window) -> np.ndarray:
        try:
            return self.src.read(self.indexes, window=window)
        except RasterioError as exc:
            raise DataError(f"{self.path}: unreadable ({exc}); re-export or remove it") from exc

    def read(self, window: Window) -> np.ndarray:
        if self.per_window:
            return self._load(window)
        top, bottom = int(window.row_off), int(window.row_off + window.height)
        have = self._top + (0 if self._buf is None else self._buf.shape[1])
        if self._buf is None or top < self._top or top >= have:
            self._buf, self._top = self._load(Window(0, top, self.src.width, bottom - top)), top
        elif bottom > have:
            new = self._load(Window(0, have, self.src.width, bottom - have))
            self._buf = np.concatenate([self._buf[:, top - self._top :], new], axis=1)
            self._top = top
        c0 = int(window.col_off)
        return self._buf[:, top - self._top : bottom - self._top, c0 : c0 + int(window.width)]


@dataclass
class _SplitTally:
    chips: int = 0
    skipped: int = 0
    counts: np.ndarray | None = None  # labelled pixels per class, then ignore
    ignored_values: Counter[int] = field(default_factory=Counter)  # raw value -> px a value table ignored

    def add(self, other: _SplitTally) -> None:
        self.chips += other.chips
        self.skipped += other.skipped
        if other.counts is not None:
            self.counts = other.counts if self.counts is None else self.counts + other.counts
        self.ignored_values.update(other.ignored_values)


@dataclass
class _Cutter:
    """Cuts one scene (image + mask) into chip files; holds what every scene shares."""

    table: ClassTable
    chip: int
    step: int
    ignore_index: int
    min_labelled: float
    band_names: list[str]  # checked against every pair before cutting
    write: bool = True  # False: only read and decode (to find every bad pair when the import fails anyway)
    crs_kinds: set[str] = field(default_factory=set)

    def cut(self, scene: _Scene, folder: Path, tally: _SplitTally, written: list[Path]) -> None:
        """Cut one scene into ``folder``, adding to ``tally`` and appending the chip files to ``written``."""
        assert scene.mask is not None
        with open_raster(scene.image) as img, open_raster(scene.mask) as msk:
            names, alpha = _band_names(img, scene.image, self.band_names)
            decoder = _MaskDecoder(msk, scene.mask, self.table, self.ignore_index)
            image_reader = _Reader(img, scene.image, [i for i in range(1, img.count + 1) if i != alpha])
            alpha_reader = _Reader(img, scene.image, [alpha]) if alpha else None
            mask_reader = _Reader(msk, scene.mask, list(range(1, min(msk.count, 3) + 1)))
            georef = img.crs is not None
            if georef:
                crs = img.crs
                self.crs_kinds.add(crs.to_string())
            else:
                crs = CRS.from_wkt(
                    f'LOCAL_CS["pixel grid of {scene.key}",LOCAL_DATUM["image pixels",32767],'
                    'UNIT["pixel",1],AXIS["column",EAST],AXIS["row",SOUTH]]'
                )
                self.crs_kinds.add(_LOCAL)
            for window in _chip_windows(img.height, img.width, self.chip, self.step):
                data = image_reader.read(window)
                mask, ignored = decoder.decode(mask_reader.read(window))
                if alpha_reader is not None:
                    mask[alpha_reader.read(window)[0] == 0] = self.ignore_index
                nodata = img.nodata
                invalid = nodata_pixels(data, nodata)
                if invalid is not None:  # no label where there is no image
                    mask[invalid] = self.ignore_index
                if data.shape[-2:] != (self.chip, self.chip):  # scene smaller than a chip
                    nodata = 0 if nodata is None else nodata
                    data = _pad(data, self.chip, nodata)
                    mask = _pad(mask, self.chip, self.ignore_index)
                labelled = mask != self.ignore_index
                if not labelled.any() or labelled.mean() < self.min_labelled:
                    tally.skipped += 1
                    continue
                c0, r0 = int(window.col_off), int(window.row_off)
                if georef:
                    transform = img.window_transform(window)
                else:
                    transform = Affine(1.0, 0.0, float(c0), 0.0, 1.0, float(r0))
                chip_id = f"{_safe_id(scene.key)}_r{r0}_c{c0}"
                common = {"crs": crs, "transform": transform}
                if self.write:
                    image_path, mask_path = folder / "images" / f"{chip_id}.tif", folder / "masks" / f"{chip_id}.tif"
                    written += [image_path, mask_path]
                    write_chip(image_path, data, nodata=nodata, band_names=names, **common)
                    write_chip(mask_path, mask[None], nodata=None, **common)
                n = len(self.table.names)
                counts = np.bincount(np.where(labelled, mask, n).ravel(), minlength=n + 1)[: n + 1]
                tally.counts = counts if tally.counts is None else tally.counts + counts
                tally.ignored_values.update(ignored)
                tally.chips += 1


def _pad(data: np.ndarray, chip: int, fill: float) -> np.ndarray:
    out = np.full((*data.shape[:-2], chip, chip), fill, data.dtype)
    out[..., : data.shape[-2], : data.shape[-1]] = data
    return out
