"""Which scenes a prediction reads, and which of each scene's bands feed the model (no torch here).

The API checks every scene with these before a prediction job is stored, the job checks them again
on the cluster, and ``geonas predict --local`` uses them too, so all three agree on what a scene
pattern means and on how a scene's bands are matched to the model's.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
import yaml

from search_spaces.errors import DataError

from .scene_output import SceneOutputs, is_complete, output_names
from .tiling import SceneGrid

__all__ = [
    "SCENE_SUFFIXES", "SceneHeader", "ScenePlan", "expand_scenes", "read_header", "band_indexes", "dataset_bands",
    "plan_scenes",
]  # fmt: skip

#: What a folder of scenes is searched for.
SCENE_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class SceneHeader:
    path: Path
    count: int
    descriptions: tuple[str | None, ...]
    profile: dict[str, Any]  # height, width, crs, transform


def expand_scenes(patterns: Sequence[str]) -> list[list[Path]]:
    """The scenes each pattern names: a file, a folder (its ``*.tif``/``*.tiff``, recursively) or a glob.

    One list per pattern, each sorted; a pattern that names nothing is a :class:`DataError` naming it.
    """
    found = []
    for pattern in patterns:
        try:
            path = Path(pattern).expanduser()
        except RuntimeError as exc:  # ~user of no user
            raise DataError(f"cannot expand {pattern}: {exc}") from None
        if path.is_dir():
            scenes = [p for p in path.rglob("*") if p.suffix.lower() in SCENE_SUFFIXES and p.is_file()]
        elif path.is_file():
            scenes = [path]
        elif glob.has_magic(pattern):
            scenes = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
        else:
            raise DataError(f"scene {pattern} does not exist")
        if not scenes:
            raise DataError(f"{pattern} names no scene (no file, or a folder without {'/'.join(SCENE_SUFFIXES)} files)")
        found.append(sorted(p.resolve() for p in scenes))
    return found


def read_header(path: Path) -> SceneHeader:
    """The scene's band count, band descriptions and grid; an unreadable file is a DataError naming it."""
    try:
        with rasterio.open(path) as src:
            profile = {"height": src.height, "width": src.width, "crs": src.crs, "transform": src.transform}
            return SceneHeader(path, src.count, tuple(src.descriptions), profile)
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"cannot read scene {path}: {exc}") from None


def dataset_bands(data_root: str | None) -> list[str] | None:
    """The band names, in file order, of the dataset a model was trained on (None if it is not here)."""
    meta = Path(data_root) / "dataset.yaml" if data_root else None
    if meta is None or not meta.is_file():
        return None
    return [str(b) for b in yaml.safe_load(meta.read_text()).get("bands") or []]


def band_indexes(header: SceneHeader, model_bands: Sequence[str], trained_bands: Sequence[str] | None) -> list[int]:
    """1-based scene bands for the model, in the model's order.

    A scene that names all its bands (band descriptions) is matched by name and must hold every band
    the model reads. An unnamed scene is read in the training dataset's band order when it has as
    many bands as that dataset, else it must have exactly the model's band count. Anything else is a
    DataError saying what the scene has and what the model needs.
    """
    names = list(header.descriptions)
    model_bands = list(model_bands)
    if all(names):
        if set(model_bands) <= set(names):
            return [names.index(b) + 1 for b in model_bands]
    elif trained_bands and header.count == len(trained_bands) and set(model_bands) <= set(trained_bands):
        return [list(trained_bands).index(b) + 1 for b in model_bands]
    elif header.count == len(model_bands):
        return list(range(1, header.count + 1))
    raise DataError(
        f"scene {header.path} has {header.count} bands {json.dumps(names)}; the model needs {len(model_bands)} "
        f"bands {model_bands} — name the bands in the GeoTIFF's band descriptions or give a scene with exactly "
        "those bands"
    )


@dataclass
class ScenePlan:
    """One scene of a prediction: what to read, where it goes, and what became of it."""

    path: Path
    outputs: SceneOutputs
    state: str = "pending"  # pending | completed | skipped | failed
    bands: list[int] | None = None
    header: SceneHeader | None = None
    grid: SceneGrid | None = None
    error: str | None = None
    note: str | None = None
    windows: int = 0

    def result(self) -> dict[str, Any]:
        """What a job's result says about this scene."""
        return {
            "scene": str(self.path),
            "state": self.state,
            "output": str(self.outputs.mask),
            "probabilities": str(self.outputs.probabilities) if self.outputs.probabilities else None,
            "windows": self.windows,
            "error": self.error,
            "note": self.note,
        }


def plan_scenes(
    patterns: Sequence[str],
    *,
    model_id: str,
    model_bands: Sequence[str],
    trained_bands: Sequence[str] | None,
    out_dir: Path,
    tile: int,
    overlap: int,
    probabilities: bool,
) -> list[ScenePlan]:
    """Every scene the patterns name, checked before any work: a band mismatch refuses the whole
    prediction (DataError); a scene that cannot be read is planned ``failed`` with its reason (it fails
    alone); a scene whose outputs are complete from this model is ``skipped`` (resume)."""
    scenes = list(dict.fromkeys(p for group in expand_scenes(patterns) for p in group))
    plans = [ScenePlan(p, o) for p, o in zip(scenes, output_names(scenes, out_dir, probabilities), strict=True)]
    for plan in plans:
        try:
            plan.header = read_header(plan.path)
        except DataError as exc:
            plan.state, plan.error = "failed", str(exc)
            continue
        plan.bands = band_indexes(plan.header, model_bands, trained_bands)
        plan.grid = SceneGrid.of(plan.header.profile["height"], plan.header.profile["width"], tile, overlap)
        plan.windows = len(plan.grid)
        if is_complete(plan.outputs, plan.header.profile, model_id):
            plan.state = "skipped"
    return plans
