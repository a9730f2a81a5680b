"""Class tables: which class names a dataset has, and which mask colours or raw values mean which class.

A table is read once per import and consulted for every mask window (:mod:`.masks`), so it is
checked here, with messages that name the entry at fault: ids without gaps, no colour or value
used twice, every class of a value table saying which raw value it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.errors import DataError

__all__ = ["ClassTable"]

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


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
    def load(cls, classes: str | Path | list[dict[str, Any]], extra: dict[Any, Any] | None = None) -> ClassTable:
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
