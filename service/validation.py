"""Checks a spec needs beyond its types: the dataset exists, is inside an allowed root, has the bands.

Only ``dataset.yaml`` is read here (no torch, no rasterio): the API must stay light. The driver reads
the chips themselves and reports a bad chip with its file name.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from search_spaces.errors import SpecError

from .settings import Settings
from .specs import ExperimentSpec

__all__ = ["check_dataset"]


def check_dataset(spec: ExperimentSpec, settings: Settings) -> Path:
    root = Path(spec.dataset.path).expanduser().resolve()
    if settings.data_roots:
        allowed = [Path(r).expanduser().resolve() for r in settings.data_roots]
        if not any(root == base or base in root.parents for base in allowed):
            raise SpecError(
                f"dataset path {spec.dataset.path} is outside the allowed data roots "
                f"({', '.join(map(str, allowed))})",
                field="dataset.path",
            )
    meta = root / "dataset.yaml"
    if not root.is_dir():
        raise SpecError(f"dataset folder {root} does not exist", field="dataset.path")
    if not meta.is_file():
        raise SpecError(
            f"{meta} is missing: a dataset folder needs a dataset.yaml (write one with `geonas data demo DIR`)",
            field="dataset.path",
        )
    try:
        raw = yaml.safe_load(meta.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{meta} is not readable YAML: {exc}", field="dataset.path") from None
    available = [str(b) for b in raw.get("bands") or []]
    if spec.dataset.bands:
        missing = [b for b in spec.dataset.bands if b not in available]
        if missing:
            raise SpecError(
                f"bands {missing} are not in {meta}; available: {', '.join(available)}", field="dataset.bands"
            )
    return root
