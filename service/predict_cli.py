"""What ``geonas predict`` needs from the API: a registered model rebuilt locally, the scene's bands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import rasterio
import yaml

from search_spaces.errors import DataError

from .client import ApiClient

__all__ = ["load_registered_model", "scene_band_indexes"]

CACHE = Path.home() / ".cache" / "geonas" / "models"


def load_registered_model(client: ApiClient, meta: dict[str, Any]):
    """Download the model's weights (cached by id) and rebuild it with the same architecture."""
    from search_spaces.builder import model_from_descriptor
    from trainers.export import load_weights

    weights = CACHE / meta["id"] / "weights.safetensors"
    if not weights.exists():
        client.download_artifact(meta["id"], "weights.safetensors", weights)
    data = meta["data"]
    model = model_from_descriptor(meta["descriptor"], len(data["bands"]), len(data["classes"]))
    load_weights(model, weights)
    return model.eval()


def scene_band_indexes(scene: Path, model_bands: list[str], data_root: str | None) -> list[int]:
    """1-based scene bands for the model: by band description, else by the dataset's band order."""
    try:
        with rasterio.open(scene) as src:
            count, names = src.count, list(src.descriptions)
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"cannot read scene {scene}: {exc}") from None
    if all(names) and set(model_bands) <= set(names):
        return [names.index(b) + 1 for b in model_bands]
    dataset_bands: list[str] | None = None
    if data_root and (Path(data_root) / "dataset.yaml").exists():
        dataset_bands = list(yaml.safe_load((Path(data_root) / "dataset.yaml").read_text())["bands"])
    if dataset_bands and count == len(dataset_bands):
        return [dataset_bands.index(b) + 1 for b in model_bands]
    if count == len(model_bands):
        return list(range(1, count + 1))
    raise DataError(
        f"scene {scene} has {count} bands {json.dumps(names)}; the model needs {model_bands} — "
        "name the bands in the GeoTIFF's band descriptions or give a scene with exactly those bands"
    )
