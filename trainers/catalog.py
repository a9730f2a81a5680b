"""Named datasets: a registry of recipes that produce a dataset folder in the project's format.

Why: an experiment spec, the CLI and ``make demo`` should be able to say ``dataset: demo`` or
``dataset: dubai-aerial`` and get the same data everywhere, without knowing which function writes
it. A recipe is idempotent: if the folder already holds a dataset it is returned as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from search_spaces.errors import DataError, NotFound
from trainers.datasets import DATASET_FILE
from trainers.demo_data import write_demo_dataset
from trainers.importer import dubai_defaults, import_dataset

__all__ = ["register_dataset", "list_datasets", "prepare_dataset", "DUBAI_SOURCE"]

Recipe = Callable[..., Path]
_REGISTRY: dict[str, Recipe] = {}

#: Where the Dubai aerial set lives in this workspace (override with ``src=``).
DUBAI_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dubai-aerial"


def register_dataset(name: str) -> Callable[[Recipe], Recipe]:
    """Decorator: register ``fn(out_dir, **options) -> Path`` under ``name``."""

    def wrap(fn: Recipe) -> Recipe:
        if name in _REGISTRY:
            raise ValueError(f"dataset recipe {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def prepare_dataset(name: str, out_dir: str | Path, **options: Any) -> Path:
    """The dataset ``name`` in ``out_dir``: built there on first use, reused afterwards."""
    if name not in _REGISTRY:
        raise NotFound(f"no dataset recipe {name!r}; available: {', '.join(list_datasets())}")
    out = Path(out_dir).expanduser().resolve()
    if (out / DATASET_FILE).is_file():
        return out
    return _REGISTRY[name](out, **options)


@register_dataset("demo")
def _demo(out: Path, **options: Any) -> Path:
    return write_demo_dataset(out, **options)


@register_dataset("dubai-aerial")
def _dubai(out: Path, *, src: str | Path | None = None, chip_size: int = 256, **options: Any) -> Path:
    source = Path(src) if src is not None else DUBAI_SOURCE
    if not (source / "classes.json").is_file():
        raise DataError(
            f"{source}: the Dubai aerial data is not there; pass src= the folder with tile_1..tile_8"
        )
    return import_dataset(source, out, chip_size=chip_size, **{**dubai_defaults(source), **options})
