"""Mask pixels to class ids: RGB colour masks, palette masks and index masks, through a class table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import ColorInterp

from search_spaces.errors import DataError
from trainers._raster import open_raster

from .classes import ClassTable

__all__ = ["read_mask"]


class _MaskDecoder:
    """Maps a window of one mask file (RGB, palette or index) to class ids, ignore as ``ignore_index``.

    A palette mask is looked up by colour only when the class table gives colours and no values;
    otherwise its raw palette indices are the values (a palette PNG is often an index mask with a
    display palette, and its colours say nothing about the classes).
    """

    def __init__(self, src, path: Path, table: ClassTable, ignore_index: int) -> None:
        self.path, self.table, self.ignore = path, table, ignore_index
        self.mode = "index"
        if src.count >= 3:
            self.mode = "rgb"
        elif src.count != 1:
            raise DataError(f"{path}: a mask needs 1 band (index/palette) or 3+ (RGB), it has {src.count}")
        elif src.colorinterp[0] == ColorInterp.palette and table.colors and not table.by_value:
            self.mode = "palette"
        if self.mode == "rgb" and not table.colors:
            raise DataError(
                f"{path}: is an RGB colour mask but the class table has no colours; give each class "
                "its 'color': '#RRGGBB'"
            )
        if self.mode == "palette":
            self.lut = np.full(256, -2, np.int16)  # -2: a palette entry no class claims
            for index, rgba in src.colormap(1).items():
                code = (rgba[0] << 16) | (rgba[1] << 8) | rgba[2]
                self.lut[index] = table.colors.get(code, -2)
            self.palette = src.colormap(1)
        if self.mode == "rgb":
            self.codes = np.array(sorted(table.colors), np.uint32)
            self.ids = np.array([table.colors[c] for c in sorted(table.colors)], np.int16)

    def decode(self, data: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
        """[count, h, w] raw mask pixels -> (uint8 [h, w] class ids / ignore_index, ignored raw values).

        The second item counts the pixels of each raw value a value table turned into ignore
        (unlisted or named as ignored); it is empty for other tables.
        """
        ignored: dict[int, int] = {}
        if self.mode == "rgb":
            rgb = data[:3].astype(np.uint32)
            code = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
            pos = np.clip(np.searchsorted(self.codes, code), 0, len(self.codes) - 1)
            ids = self.ids[pos]
            unknown = self.codes[pos] != code
            if unknown.any():
                self._fail(
                    {
                        f"#{int(c):06X}": int(n)
                        for c, n in zip(*np.unique(code[unknown], return_counts=True), strict=True)
                    }
                )
        elif self.mode == "palette":
            ids = self.lut[data[0]]
            unknown = ids == -2
            if unknown.any():
                found = {}
                for v, n in zip(*np.unique(data[0][unknown], return_counts=True), strict=True):
                    r, g, b, _ = self.palette.get(int(v), (0, 0, 0, 0))
                    found[f"#{r:02X}{g:02X}{b:02X} (palette index {int(v)})"] = int(n)
                self._fail(found)
        else:
            raw = data[0]
            found, inverse, counts = np.unique(raw, return_inverse=True, return_counts=True)
            mapped = np.array([self._class_of(v.item()) for v in found], np.int16)
            ids = mapped[inverse.reshape(raw.shape)]
            unknown = mapped == -2
            if unknown.any():
                values = [v.item() for v in found[unknown]][:10]
                raise DataError(
                    f"{self.path}: mask values {values} are not class ids 0..{len(self.table.names) - 1} "
                    f"or ignore {self.ignore}; map them with extra_colors={{value: class or 'ignore'}}, "
                    'or use a class table of raw values ([{"value": 1, "name": ...}, ...])'
                )
            if self.table.by_value:
                ignored = {int(v): int(n) for v, n, c in zip(found, counts, mapped, strict=True) if c < 0}
        out = ids.astype(np.int16)
        out[out < 0] = self.ignore
        return out.astype(np.uint8), ignored

    def _class_of(self, value: Any) -> int:
        """Class id of one raw value; -1 ignore, -2 unknown (an error for id tables)."""
        if value in self.table.values:
            return self.table.values[value]
        if self.table.by_value or value == self.ignore:
            return -1
        return -2

    def _fail(self, found: dict[str, int]) -> None:
        listed = ", ".join(f"{c} ({n} px)" for c, n in sorted(found.items(), key=lambda kv: -kv[1])[:6])
        raise DataError(
            f"{self.path}: colours not in the class table: {listed}; add them with "
            "extra_colors={'#RRGGBB': class id, class name or 'ignore'}"
        )


def read_mask(path: str | Path, table: ClassTable, ignore_index: int = 255) -> np.ndarray:
    """A whole mask file as uint8 [h, w] class ids, ignore as ``ignore_index``.

    For sources read whole (small scenes, chip sets held in memory); the importer decodes window by
    window with the same :class:`_MaskDecoder`. A colour the table does not list is a DataError.
    """
    path = Path(path)
    with open_raster(path) as src:
        decoder = _MaskDecoder(src, path, table, ignore_index)
        data = src.read(list(range(1, min(src.count, 3) + 1)))
    return decoder.decode(data)[0]
