"""Turn a folder of scenes + colour (or index) masks into the project's dataset format.

``import_dataset`` pairs every image with its mask, assigns whole scenes to splits (by glob or by
a split file: chips of one scene never land in two splits, because neighbouring chips share
content and a random chip split leaks), cuts both into chips of ``chip_size`` with an optional
overlap, translates mask colours or raw mask values to class indices 0..n-1 through a class table,
writes GeoTIFF chips and ``dataset.yaml``, and computes the train statistics. Chips are cut once
here so that trials never decode JPEG/PNG or re-tile on every epoch.

Every pair is checked before anything is cut (sizes, band names, mask kind, from the headers), and
a pair whose pixels fail while cutting does not stop the others: one error lists every bad pair,
or, with ``skip_bad``, the rest is imported and ``dataset.yaml`` says what was skipped and why.

Georeferencing: a source with a CRS keeps it, and each chip gets the exact window transform. A
source without one (plain JPEG/PNG) gets a *local pixel CRS*: an engineering CRS named
``pixel grid of <scene>`` with origin at the scene's top-left corner, 1 unit = 1 pixel, y down, and
the chip's pixel offset in its transform. That keeps every chip traceable to where it was cut
(predictions can be stitched back), while the name makes it impossible to mistake for a real map
projection. (GeoTIFF stores an engineering CRS without its unit, so GDAL reads the unit back as
metre; the name and ``dataset.yaml``'s ``crs`` note carry the meaning.)

Memory: a GeoTIFF source is read one chip window at a time (never the whole scene); JPEG/PNG have
no random access, so they are read in strips of one chip row, top to bottom.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.transform import Affine
from rasterio.windows import Window

from search_spaces.errors import DataError, SpecError
from trainers._raster import nodata_pixels, open_raster, publish_dir, write_chip
from trainers.datasets import DatasetInfo, band_stats

__all__ = ["BadPairs", "ClassTable", "import_dataset", "dubai_defaults", "DUBAI_SPLIT"]

_IMAGE_SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".img", ".vrt"}
_PAIR_FOLDERS = {"images", "image", "imgs", "masks", "mask", "labels", "label", "annotations", "gt"}
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")

#: The Dubai aerial set's suggested split (its README): by tile, never by part or chip.
DUBAI_SPLIT: dict[str, list[str]] = {
    "train": [f"tile_{i}/*" for i in range(1, 7)],
    "val": ["tile_7/*"],
    "test": ["tile_8/*"],
}


def dubai_defaults(src: str | Path) -> dict[str, Any]:
    """Keyword arguments for importing the Dubai aerial set at ``src``.

    Use: ``import_dataset(src, out, chip_size=256, **dubai_defaults(src))``. Black (#000000) marks
    areas no polygon covers: it becomes ``ignore_index``, not a seventh class.
    """
    src = Path(src)
    return {
        "classes": src / "classes.json",
        "split": {k: list(v) for k, v in DUBAI_SPLIT.items()},
        "image_glob": "tile_*/images/*.jpg",
        "mask_glob": "tile_*/masks/*.png",
        "extra_colors": {"#000000": "ignore"},
        "name": "dubai-aerial",
    }


# --------------------------------------------------------------------------- class table


def _colour_code(text: str, where: str) -> int:
    match = _HEX.match(str(text).strip())
    if not match:
        raise DataError(f"{where}: colour {text!r} is not #RRGGBB")
    return int(match.group(1), 16)


def _raw_values(entry: dict[str, Any], where: str) -> list[int]:
    """The raw mask values of a class-table entry: ``"value": 1`` or ``"value": [1, 3]``."""
    raw = entry["value"]
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise DataError(f"{where}: 'value' must be an integer mask value or a list of them, got {raw!r}")
    return values


@dataclass(frozen=True)
class ClassTable:
    """Class names by index, and how mask colours / raw values map to them (-1 = ignore).

    Two kinds of table. An *id table* (no entry has ``value``) says that index masks already hold
    class ids 0..n-1, so any other value is an error: it usually means the wrong table. A *value
    table* maps raw mask values to classes (``{"value": 1, "name": "forest"}``); the classes become
    0..n-1 in the order listed (or by ``id``), and a raw value it does not list becomes ignore. That
    is how public masks are made (0 = no label, 1..n = classes), and a made-up class for value 0
    would be scored as a class nobody annotated. What was ignored is counted in ``dataset.yaml``.
    """

    names: tuple[str, ...]
    colors: dict[int, int] = field(default_factory=dict)  # 0xRRGGBB -> class id or -1
    values: dict[int, int] = field(default_factory=dict)  # raw index-mask value -> class id or -1
    by_value: bool = False  # a value table: unlisted values are ignored, palette masks read by index

    @classmethod
    def load(
        cls, classes: str | Path | list[dict[str, Any]], extra: dict[Any, Any] | None = None
    ) -> ClassTable:
        """Read a class table: a JSON file (or list) of class entries.

        An entry is ``{"name", "value"?, "color"?, "id"?}``: ``value`` is the raw mask value (or a
        list of them) of the class, ``color`` its ``#RRGGBB`` in colour masks, ``id`` its class id
        (all entries have one, 0..n-1, or none: then the order of the list). ``{"value": 0,
        "ignore": true, "name"?}`` (or ``"color"``) names a value that is not a class.

        ``extra`` maps additional colours (``"#000000"``) or index values (``0``) to a class id, a
        class name, or ``"ignore"``.
        """
        where = str(classes) if isinstance(classes, (str, Path)) else "classes"
        if isinstance(classes, (str, Path)):
            path = Path(classes)
            if not path.is_file():
                raise DataError(f"{path}: class table not found")
            try:
                entries = json.loads(path.read_text())
            except ValueError as exc:
                raise DataError(f"{path}: not valid JSON ({exc})") from exc
        else:
            entries = classes
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise DataError(
                f"{where}: expected a JSON list of class objects like {{'value': 1, 'name': 'forest'}} "
                "or {'id': 0, 'name': 'road', 'color': '#808080'}"
            )
        ignores = [e for e in entries if e.get("ignore")]
        entries = [e for e in entries if not e.get("ignore")]
        with_id = [e for e in entries if "id" in e]
        if with_id and len(with_id) != len(entries):
            raise DataError(f"{where}: give every class an 'id' (0..{len(entries) - 1}) or none (list order)")
        try:
            ordered = sorted(entries, key=lambda e: int(e["id"])) if with_id else list(entries)
            ids = [int(e["id"]) for e in ordered] if with_id else list(range(len(ordered)))
            names = tuple(str(e["name"]) for e in ordered)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: every class needs a 'name' and, if it has one, an integer 'id' ({exc})") from exc
        if not names:
            raise DataError(f"{where}: no classes, only ignored values")
        if ids != list(range(len(ids))):
            raise DataError(f"{where}: class ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        if len(set(names)) != len(names):
            raise DataError(f"{where}: class names repeat: {list(names)}")
        by_value = any("value" in e for e in entries)
        colors: dict[int, int] = {}
        values: dict[int, int] = {}
        for cid, e in [*enumerate(ordered), *((-1, e) for e in ignores)]:
            label = e.get("name", "ignore") if cid < 0 else names[cid]
            if cid < 0 and "id" in e:
                raise DataError(f"{where}: ignored entry {e} cannot have an 'id'; it is not a class")
            if e.get("color") is not None:
                code = _colour_code(e["color"], where)
                if code in colors:
                    raise DataError(f"{where}: colour {e['color']} is used twice (again by '{label}')")
                colors[code] = cid
            if "value" in e:
                for value in _raw_values(e, where):
                    if value in values:
                        raise DataError(f"{where}: mask value {value} is used twice (again by '{label}')")
                    values[value] = cid
            elif cid < 0 and e.get("color") is None:
                raise DataError(f"{where}: ignored entry {e} needs the 'value' or 'color' it ignores")
            elif by_value and e.get("color") is None:
                raise DataError(
                    f"{where}: class '{label}' has no 'value' (or 'color'); in a table that maps mask "
                    "values, every class says which raw value it is"
                )
        if not by_value:
            values.update({i: i for i in ids})
        for key, target in (extra or {}).items():
            cid = cls._target(target, names, where)
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                values[int(key)] = cid
            else:
                colors[_colour_code(key, f"{where} (extra_colors)")] = cid
        return cls(names, colors, values, by_value)

    @staticmethod
    def _target(target: Any, names: tuple[str, ...], where: str) -> int:
        if target == "ignore":
            return -1
        if isinstance(target, int) and 0 <= target < len(names):
            return target
        if isinstance(target, str) and target in names:
            return names.index(target)
        raise DataError(
            f"{where}: extra_colors target {target!r} must be 'ignore', a class id 0..{len(names) - 1} "
            f"or a class name ({', '.join(names)})"
        )


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


# --------------------------------------------------------------------------- scenes and splits


@dataclass
class _Scene:
    key: str  # image path relative to src, without the images/masks folder and suffix
    image: Path
    mask: Path | None  # None: no mask pairs with this image (a bad pair if the scene is in a split)
    rel: str  # image path relative to src (what split globs match)
    mask_rel: str | None = None  # mask path relative to src


def _pair_key(rel: Path) -> str:
    parts = [p for p in rel.parent.parts if p.lower() not in _PAIR_FOLDERS]
    return "/".join([*parts, rel.stem])


def _find_scenes(src: Path, image_glob: str, mask_glob: str) -> list[_Scene]:
    def files(pattern: str) -> list[Path]:
        return sorted(
            p for p in src.glob(pattern)
            if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
        )  # fmt: skip

    images, masks = files(image_glob), files(mask_glob)
    if not images:
        raise DataError(
            f"{src}: no images match {image_glob!r} (suffixes {', '.join(sorted(_IMAGE_SUFFIXES))})"
        )
    mask_by_key: dict[str, Path] = {}
    for m in masks:
        mask_by_key.setdefault(_pair_key(m.relative_to(src)), m)
    scenes, seen = [], {}
    for img in images:
        if img in mask_by_key.values():
            continue  # image and mask globs overlap: a mask is not a scene
        rel = img.relative_to(src)
        key = _pair_key(rel)
        if key in seen:
            raise DataError(f"{img}: same scene name as {seen[key]}; rename one (pairing uses '{key}')")
        seen[key] = img
        mask = mask_by_key.get(key)
        scenes.append(_Scene(key, img, mask, rel.as_posix(), mask and mask.relative_to(src).as_posix()))
    return scenes


#: Header names of the image-path column and of the split column in a split table (any case).
_PATH_COLUMNS = ("path", "image", "image_path", "file", "filename")
_SPLIT_COLUMN = "split"


def _csv_rows(path: Path, lines: list[str]) -> list[list[str]]:
    """The rows of a split table, with the first delimiter (``,`` tab ``;``) that splits every row.

    A table with none of them falls back to today's whitespace-separated ``path split`` lines.
    """
    for delimiter in (",", "\t", ";"):
        rows = [[c.strip() for c in row] for row in csv.reader(lines, delimiter=delimiter, skipinitialspace=True)]
        if rows and all(len(row) >= 2 for row in rows):
            return rows
    rows = [line.split() for line in lines]
    if all(len(row) == 2 for row in rows):
        return rows
    raise DataError(
        f"{path}: cannot tell the columns of this split table; write CSV rows 'path,split' "
        f"(a comma or a tab between them; quote a path that holds one)"
    )


def _could_name_a_scene(cell: str) -> bool:
    """Whether a cell could match an image path: every image has a suffix, so a path or glob that
    matches one holds a '.', '/' or a glob character. A first row whose path cell cannot is a header."""
    return any(ch in cell for ch in "./*?[")


def _read_split_table(path: Path, text: str) -> dict[str, list[str]]:
    """``{split: [image paths or globs]}`` from a CSV/TSV split table, with or without a header.

    Headerless: two columns, path then split (``#`` lines are comments). With a header: the columns
    named path/image (see ``_PATH_COLUMNS``) and ``split``, in any order, other columns ignored.
    """
    numbered = [
        (n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise DataError(f"{path}: the split table has no rows")
    rows = _csv_rows(path, [line for _, line in numbered])
    numbers = [n for n, _ in numbered]
    columns = [c.casefold() for c in rows[0]]
    headed = _SPLIT_COLUMN in columns or bool(set(columns) & set(_PATH_COLUMNS))
    headed = headed or not _could_name_a_scene(rows[0][0])  # a header line is never a scene
    if headed:
        path_col = next((columns.index(c) for c in _PATH_COLUMNS if c in columns), None)
        if path_col is None or _SPLIT_COLUMN not in columns:
            raise DataError(
                f"{path}:{numbers[0]}: the header {rows[0]} needs a column named {' or '.join(_PATH_COLUMNS)} "
                f"(the image path relative to the source folder) and one named '{_SPLIT_COLUMN}'"
            )
        split_col, body = columns.index(_SPLIT_COLUMN), list(zip(numbers[1:], rows[1:], strict=True))
        if not body:
            raise DataError(f"{path}: the split table has a header but no rows")
        expected = f"the {len(columns)} columns of the header ({', '.join(rows[0])})"
    else:
        path_col, split_col, body = 0, 1, list(zip(numbers, rows, strict=True))
        expected = "'path,split' (or a header row naming the columns path and split, then any others)"
    mapping: dict[str, list[str]] = {}
    for n, row in body:
        if len(row) <= max(path_col, split_col) or (not headed and len(row) != 2):
            raise DataError(f"{path}:{n}: expected {expected}, got {row}")
        scene, name = row[path_col].replace("\\", "/").removeprefix("./"), row[split_col]
        if not scene or not name:
            raise DataError(f"{path}:{n}: a row needs both an image path and a split, got {row}")
        mapping.setdefault(name, []).append(scene)
    return mapping


def _load_split(split: dict[str, list[str]] | str | Path) -> dict[str, list[str]]:
    """A split as {split: [globs over image paths relative to src]}; from a dict or a file.

    Split files: YAML/JSON with that mapping, or a CSV/TSV table (see :func:`_read_split_table`).
    """
    where = "split"
    if isinstance(split, (str, Path)):
        path = Path(split)
        where = str(path)
        if not path.is_file():
            raise DataError(f"{path}: split file not found")
        text = path.read_text()
        if path.suffix.lower() in {".yaml", ".yml", ".json"}:
            try:
                split = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise DataError(f"{path}: not valid YAML/JSON ({exc})") from exc
        else:
            split = _read_split_table(path, text)
    if not isinstance(split, dict) or not split:
        raise DataError(f"{where}: a split maps split names to lists of scene globs, got {split!r}")
    out = {}
    for name, globs in split.items():
        if isinstance(globs, str):
            globs = [globs]
        if (
            not isinstance(name, str)
            or not re.fullmatch(r"[A-Za-z0-9_-]+", name)
            or not isinstance(globs, list)
        ):
            raise DataError(f"{where}: split '{name}' must be a simple name with a list of globs")
        out[name] = [str(g) for g in globs]
    if "train" not in out:
        raise DataError(f"{where}: needs a 'train' split (statistics come from it); has {', '.join(out)}")
    return out


def _assign(scenes: list[_Scene], split: dict[str, list[str]], where: str) -> dict[str, list[_Scene]]:
    out: dict[str, list[_Scene]] = {name: [] for name in split}
    for scene in scenes:
        hits = [
            n for n, globs in split.items()
            if any(scene.rel == g or fnmatch.fnmatchcase(scene.rel, g) for g in globs)
        ]  # fmt: skip
        if len(hits) > 1:
            raise DataError(f"{scene.image}: matches splits {hits} in {where}; a scene belongs to one split")
        if hits:
            out[hits[0]].append(scene)
    empty = [n for n, s in out.items() if not s]
    if empty:
        raise DataError(
            f"{where}: no scene matches split(s) {empty}; scene paths look like '{scenes[0].rel}'"
        )
    return out


# --------------------------------------------------------------------------- cutting


def _starts(length: int, chip: int, step: int) -> list[int]:
    """Window offsets covering [0, length): regular steps, the last one shifted to end at the edge."""
    if length <= chip:
        return [0]
    starts = list(range(0, length - chip + 1, step))
    if starts[-1] + chip < length:
        starts.append(length - chip)
    return starts


def _band_names(src, path: Path, override: list[str] | None) -> tuple[list[str], int | None]:
    """(band names, 1-based alpha band or None). Names from colour interpretation or descriptions."""
    interp = list(src.colorinterp)
    alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
    keep = [i for i in range(src.count) if i + 1 != alpha]
    if override is not None:
        if len(override) != len(keep):
            raise DataError(
                f"{path}: has {len(keep)} bands but --bands (bands=) names {len(override)}: {', '.join(override)}"
            )
        return list(override), alpha
    named = {
        ColorInterp.red: "red",
        ColorInterp.green: "green",
        ColorInterp.blue: "blue",
        ColorInterp.gray: "gray",
    }
    names = []
    for i in keep:
        desc = src.descriptions[i]
        names.append(desc or named.get(interp[i]) or f"band{i + 1}")
    if len(set(names)) != len(names):
        names = [f"band{i + 1}" for i in keep]
    return names, alpha


def _chip_windows(height: int, width: int, chip: int, step: int) -> Iterator[Window]:
    """Chip windows in row-major order (so strip readers only ever move down)."""
    cols = _starts(width, chip, step)
    for r in _starts(height, chip, step):
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


_LOCAL = "local"


def _pad(data: np.ndarray, chip: int, fill: float) -> np.ndarray:
    out = np.full((*data.shape[:-2], chip, chip), fill, data.dtype)
    out[..., : data.shape[-2], : data.shape[-1]] = data
    return out


def _safe_id(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key.replace("/", "__"))


# --------------------------------------------------------------------------- bad pairs


@dataclass
class _BadPair:
    scene: _Scene
    split: str
    reason: str

    def record(self) -> dict[str, Any]:
        """What ``dataset.yaml`` (``import.skipped_pairs``) and :class:`BadPairs` say about it."""
        return {"image": self.scene.rel, "mask": self.scene.mask_rel, "split": self.split, "reason": self.reason}


class BadPairs(DataError):
    """Some image/mask pairs cannot be imported; ``pairs`` has one record per pair (image, mask,
    split, reason), every one found, not just the first."""

    def __init__(self, message: str, pairs: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.pairs = pairs

    def __reduce__(self):
        return (type(self), (str(self), self.pairs))

    @classmethod
    def of(cls, bad: list[_BadPair], total: int) -> BadPairs:
        bad = sorted(bad, key=lambda b: b.scene.rel)
        listed = "\n".join(f"  - {b.reason}" for b in bad)
        if len(bad) < total:
            advice = (
                "Fix them, or pass --skip-bad (skip_bad=True) to import the rest; what is skipped, and why, "
                "is recorded in dataset.yaml (import.skipped_pairs)."
            )
        else:
            advice = "Every pair is bad, so --skip-bad would leave nothing: fix the files or the options."
        return cls(
            f"{len(bad)} of {total} image/mask pairs cannot be imported:\n{listed}\n{advice}",
            [b.record() for b in bad],
        )


def _pair_bands(
    scene: _Scene, table: ClassTable, bands: list[str] | None, ignore_index: int, mask_glob: str
) -> list[str]:
    """Band names of one pair, from its headers only (no pixels); DataError for a pair that can't work."""
    if scene.mask is None:
        raise DataError(
            f"{scene.image}: no mask found; expected a file matching {mask_glob!r} whose path without "
            f"the images/masks folder and suffix is '{scene.key}'"
        )
    with open_raster(scene.image) as img, open_raster(scene.mask) as msk:
        names, _ = _band_names(img, scene.image, bands)
        if (img.width, img.height) != (msk.width, msk.height):
            raise DataError(
                f"{scene.mask}: mask is {msk.width}x{msk.height} px but its image {scene.image} "
                f"is {img.width}x{img.height}; they must have the same size"
            )
        _MaskDecoder(msk, scene.mask, table, ignore_index)  # mask band count, colours vs table
    return names


def _check_pairs(
    by_split: dict[str, list[_Scene]], table: ClassTable, bands: list[str] | None, ignore_index: int, mask_glob: str
) -> tuple[list[_BadPair], list[str]]:
    """(bad pairs, the dataset's band names), from every pair's headers, before anything is cut.

    Images whose band names differ but whose band counts agree are not bad pairs: that is the usual
    state of per-file band descriptions, and ``bands`` names them. An image with another band count
    than most is a bad pair.
    """
    bad: list[_BadPair] = []
    groups: dict[tuple[str, ...], list[_Scene]] = {}
    ids: dict[str, _Scene] = {}
    for split, scenes in by_split.items():
        for scene in scenes:
            other = ids.setdefault(_safe_id(scene.key), scene)
            if other is not scene:
                raise DataError(
                    f"{scene.image} and {other.image} would write chips of the same name "
                    f"'{_safe_id(scene.key)}_r.._c..'; rename one"
                )
            try:
                names = _pair_bands(scene, table, bands, ignore_index, mask_glob)
            except DataError as exc:
                bad.append(_BadPair(scene, split, str(exc)))
                continue
            groups.setdefault(tuple(names), []).append(scene)
    if not groups:
        raise BadPairs.of(bad, len(bad))  # not one good pair: nothing to compare band names with
    common = max(groups, key=lambda k: len(groups[k]))
    renamed = [k for k in groups if k != common and len(k) == len(common)]
    if renamed:
        listed = "; ".join(
            f"{', '.join(k)} in {groups[k][0].rel}" + (f" and {len(groups[k]) - 1} more" if len(groups[k]) > 1 else "")
            for k in [common, *renamed]
        )
        raise DataError(
            f"band names differ between the images ({listed}); name the bands, in the files' order, with "
            f"--bands {','.join(common)} (bands=[...] in Python)"
        )
    for k, scenes in groups.items():
        if k != common:
            for scene in scenes:
                reason = (
                    f"{scene.image}: has {len(k)} bands ({', '.join(k)}) but {len(groups[common])} other "
                    f"images have {len(common)} ({', '.join(common)})"
                )
                split = next(s for s, members in by_split.items() if scene in members)
                bad.append(_BadPair(scene, split, reason))
    return bad, list(common)


# --------------------------------------------------------------------------- import


def import_dataset(
    src: str | Path,
    out: str | Path,
    *,
    classes: str | Path | list[dict[str, Any]],
    split: dict[str, list[str]] | str | Path,
    chip_size: int = 256,
    overlap: int = 0,
    image_glob: str = "**/images/*",
    mask_glob: str = "**/masks/*",
    extra_colors: dict[Any, Any] | None = None,
    name: str | None = None,
    bands: list[str] | None = None,
    ignore_index: int = 255,
    min_labelled: float = 0.0,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> Path:
    """Import scenes under ``src`` into a dataset at ``out``; returns ``out``.

    - ``classes``: class table (JSON file or list), see :meth:`ClassTable.load`. Raw mask values:
      ``[{"value": 1, "name": "forest"}, {"value": 2, "name": "other"}]`` gives classes 0, 1 and
      makes every other value ignore. Colours: ``{"name", "color": "#RRGGBB"}`` for RGB (and
      palette) masks. Without ``value`` or ``color``, 1-band masks hold class ids 0..n-1.
    - ``split``: ``{split: [globs over image paths relative to src]}`` or a split file (YAML/JSON
      mapping, or a CSV table: ``path,split`` rows, or a header naming the columns path/image and
      split, in any order, among others). Whole scenes go to one split; unmatched scenes are left out.
    - ``image_glob`` / ``mask_glob``: which files are images and masks; an image pairs with the
      mask whose relative path is the same after dropping the images/masks folder and the suffix.
    - ``chip_size`` / ``overlap``: chips of chip_size² px stepping chip_size - overlap; the last
      chip of a row or column is shifted to end at the scene edge (no padding unless a scene is
      smaller than a chip; padding is nodata in the image and ignore in the mask).
    - ``extra_colors``: more colours (``"#000000"``) or index values mapped to a class or ``"ignore"``.
    - ``bands``: band names in the files' order (default: from the files' colour interpretation or
      descriptions, which must then agree between files).
    - ``min_labelled``: chips with a smaller labelled fraction are dropped (all-ignore chips always).
    - ``skip_bad``: import the good pairs when some are bad (sizes differ, unreadable, no mask,
      unknown mask colours) and record the bad ones in ``dataset.yaml``; without it, one
      :class:`BadPairs` error lists every bad pair.

    ``dataset.yaml`` records the scenes of each split, the pixels per class, the raw values a value
    table ignored and the skipped pairs (key ``import``). Written to a temporary sibling folder and
    renamed, so a failed import leaves nothing behind.
    """
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    if not isinstance(chip_size, int) or chip_size < 8:
        raise SpecError(f"chip_size must be an integer >= 8, got {chip_size!r}", field="chip_size")
    if not isinstance(overlap, int) or not 0 <= overlap < chip_size:
        raise SpecError(f"overlap must be in 0..{chip_size - 1} px, got {overlap!r}", field="overlap")
    if bands is not None:
        if isinstance(bands, str) or not bands or not all(isinstance(b, str) and b.strip() for b in bands):
            raise SpecError(f"bands must be a list of band names, got {bands!r}", field="bands")
        bands = [b.strip() for b in bands]
        if len(set(bands)) != len(bands):
            raise SpecError(f"bands name a band twice: {bands}", field="bands")
    table = ClassTable.load(classes, extra_colors)
    if not len(table.names) <= ignore_index <= 255:
        raise SpecError(f"ignore_index must be in {len(table.names)}..255 (not a class id, fits uint8)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: folder exists and is not empty; choose another or pass overwrite=True")
        if not (out / "dataset.yaml").is_file():
            raise DataError(f"{out}: not a dataset folder (no dataset.yaml); refusing to replace it")
    where = "split" if isinstance(split, dict) else str(split)
    by_split = _assign(_find_scenes(src, image_glob, mask_glob), _load_split(split), where)
    total = sum(len(s) for s in by_split.values())
    bad, band_names = _check_pairs(by_split, table, bands, ignore_index, mask_glob)

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cutter = _Cutter(table, chip_size, chip_size - overlap, ignore_index, min_labelled, band_names)
    # Once the import is bound to fail, the remaining pairs are still read (not written): the error
    # then lists every bad pair, including those whose pixels are bad, in one go.
    cutter.write = skip_bad or not bad
    report: dict[str, Any] = {"chips": {}, "skipped_empty": {}, "class_pixels": {}, "scenes": {}}
    try:
        tallies: dict[str, _SplitTally] = {}
        imported: dict[str, list[_Scene]] = {}
        skip = {b.scene.rel for b in bad}
        for split_name, scenes in by_split.items():
            tallies[split_name], imported[split_name] = _SplitTally(), []
            for scene in scenes:
                if scene.rel in skip:
                    continue
                one, written = _SplitTally(), []
                try:
                    cutter.cut(scene, tmp / split_name, one, written)
                except DataError as exc:  # this pair only: undo its chips, go on to find the others
                    for path in written:
                        path.unlink(missing_ok=True)
                    bad.append(_BadPair(scene, split_name, str(exc)))
                    cutter.write = skip_bad
                    continue
                tallies[split_name].add(one)
                imported[split_name].append(scene)
        if bad and not skip_bad:
            raise BadPairs.of(bad, total)
        for split_name, tally in tallies.items():
            if not imported[split_name]:
                raise DataError(
                    f"split '{split_name}': every scene in it is a bad pair; nothing to import "
                    f"({'; '.join(b.reason for b in bad if b.split == split_name)})"
                )
            if tally.counts is None:
                raise DataError(
                    f"split '{split_name}': no chip has labelled pixels; check the masks and classes"
                )
            report["chips"][split_name] = tally.chips
            report["skipped_empty"][split_name] = tally.skipped
            report["class_pixels"][split_name] = {
                **{n: int(c) for n, c in zip(table.names, tally.counts[:-1], strict=True)},
                "ignore": int(tally.counts[-1]),
            }
            report["scenes"][split_name] = [s.rel for s in imported[split_name]]
        if table.by_value:  # raw values that became ignore: a typo in the table shows up here
            report["ignored_values"] = {s: dict(sorted(t.ignored_values.items())) for s, t in tallies.items()}
        report["skipped_pairs"] = [b.record() for b in sorted(bad, key=lambda b: b.scene.rel)]
        if cutter.crs_kinds == {_LOCAL}:
            crs_note = (
                "none in the source: each chip has a local pixel CRS 'pixel grid of <scene>' "
                "(origin top-left, 1 unit = 1 px, y down)"
            )
        else:
            crs_note = ", ".join(sorted(k if k != _LOCAL else "local pixel grid" for k in cutter.crs_kinds))
        info = DatasetInfo(
            name=name or src.name,
            bands=tuple(band_names),
            classes=table.names,
            root=tmp,
            ignore_index=ignore_index,
            splits={s: s for s in by_split},
            source=str(src),
            crs=crs_note,
            extra={"chip_size": chip_size, "overlap": overlap, "import": report},
        )
        info.write()
        band_stats(info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_dir(tmp, out, replace=overwrite)
