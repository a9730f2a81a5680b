"""Split files: which scenes go to which split, from a mapping, a YAML/JSON file or a CSV/TSV table.

The result is ``{split: [image paths or globs relative to the source folder]}``; matching scenes to
it is :func:`trainers.importer.pairs._assign`'s job.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import yaml

from search_spaces.errors import DataError

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
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not isinstance(globs, list):
            raise DataError(f"{where}: split '{name}' must be a simple name with a list of globs")
        out[name] = [str(g) for g in globs]
    if "train" not in out:
        raise DataError(f"{where}: needs a 'train' split (statistics come from it); has {', '.join(out)}")
    return out
