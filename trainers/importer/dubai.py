"""The Dubai aerial set (RGB JPEG scenes, colour PNG masks, ``classes.json``): its import options
and its class table, so the importer and CSF's raw-folder chip source read its masks the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .classes import ClassTable

__all__ = ["DUBAI_SPLIT", "dubai_defaults", "dubai_classes"]

#: The Dubai aerial set's suggested split (its README): by tile, never by part or chip.
DUBAI_SPLIT: dict[str, list[str]] = {
    "train": [f"tile_{i}/*" for i in range(1, 7)],
    "val": ["tile_7/*"],
    "test": ["tile_8/*"],
}

#: Black marks areas no polygon covers: ignore, not a seventh class.
_DUBAI_EXTRA_COLORS = {"#000000": "ignore"}


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
        "extra_colors": dict(_DUBAI_EXTRA_COLORS),
        "name": "dubai-aerial",
    }


def dubai_classes(src: str | Path) -> ClassTable:
    """The class table of the Dubai aerial set at ``src`` (its ``classes.json``, black as ignore).

    Decode its masks with :func:`trainers.importer.read_mask` (whole files) or import the set with
    :func:`dubai_defaults`; both give the same class ids.
    """
    return ClassTable.load(Path(src) / "classes.json", dict(_DUBAI_EXTRA_COLORS))
