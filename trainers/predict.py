"""Predict a whole scene of any size in this process: overlapping tiles, blended edges, a georeferenced mask out.

The scene is read with rasterio windows one row of tiles at a time and the output is written the
same way, so memory holds one strip (``tile`` rows × scene width) whatever the scene's size. Tile
predictions are blended with a weight that falls towards the tile's edges, which removes seams.
The windows, their reading, the model's forward pass, the blending and the output files are the
same pieces the cluster's batch prediction (:mod:`trainers.batch_predict`) uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

from search_spaces.errors import DataError

from .blend import NODATA_CLASS, StripBlender, read_window
from .loop import Device, pick_device
from .scene_output import SceneOutputs, SceneWriter
from .tiling import SceneGrid, blend_weights

__all__ = ["PredictReport", "predict_scene", "blend_weights", "auto_batch_size", "window_probabilities", "NODATA_CLASS"]


@dataclass(frozen=True)
class PredictReport:
    out: str
    probabilities: str | None
    height: int
    width: int
    tiles: int
    classes: int


def auto_batch_size(device: Device, tile: int, bands: int) -> int:
    """Tiles per forward pass from free memory (a conservative 400× the input tensor per tile)."""
    per_tile = tile * tile * bands * 4 * 400
    if device.is_cuda:
        free, _ = torch.cuda.mem_get_info(device.torch_device)
        return int(np.clip(free // per_tile, 1, 64))
    return 4


def window_probabilities(model: torch.nn.Module, device: Device, images: np.ndarray) -> np.ndarray:
    """Class probabilities ``[N, classes, t, t]`` (float32) of normalised windows ``[N, bands, t, t]``.

    Mixed precision on a GPU (the device's autocast), full precision on a CPU; softmax in float32.
    """
    with torch.inference_mode(), device.autocast():
        logits = model(device.batch(torch.from_numpy(np.ascontiguousarray(images))))
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


def predict_scene(
    model: torch.nn.Module,
    scene: str | Path,
    out: str | Path,
    *,
    band_indexes: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int | None = None,
    probabilities: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    tags: dict[str, str] | None = None,
) -> PredictReport:
    """Write the class mask of ``scene`` to ``out`` (and class probabilities ×255 to ``probabilities``).

    ``band_indexes`` are the 1-based scene bands the model reads, in the model's order. Outputs are
    Cloud-Optimized GeoTIFFs, published only when complete (:class:`~trainers.scene_output.SceneWriter`).
    """
    device = pick_device()
    model = device.prepare(model).eval()
    mean_a = np.asarray(mean, np.float32)[:, None, None]
    std_a = np.asarray(std, np.float32)[:, None, None]
    try:
        src = rasterio.open(scene)
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"cannot read scene {scene}: {exc}") from None
    with src:
        if max(band_indexes) > src.count:
            raise DataError(f"scene {scene} has {src.count} bands; the model reads bands {list(band_indexes)}")
        grid = SceneGrid.of(src.height, src.width, tile, overlap)
        profile = {"height": src.height, "width": src.width, "crs": src.crs, "transform": src.transform}
        batch = batch_size or auto_batch_size(device, grid.tile, len(band_indexes))
        outputs = SceneOutputs(Path(out), Path(probabilities) if probabilities else None)
        writer = SceneWriter(outputs, profile, num_classes, tags or {})
        try:
            blender = StripBlender(grid, num_classes, writer, probabilities=probabilities is not None)
            windows = list(grid.windows())
            for i in range(0, len(windows), batch):
                chunk = windows[i : i + batch]
                read = [read_window(src, band_indexes, y, x, grid.tile, mean_a, std_a) for y, x in chunk]
                probs = window_probabilities(model, device, np.stack([image for image, _ in read]))
                for (y, x), p, (_, present) in zip(chunk, probs, read, strict=True):
                    blender.add(y, x, p, present)
                if progress:
                    progress(blender.windows_done, len(grid))
            blender.finish()
            writer.commit()
        except BaseException:
            writer.abort()
            raise
    return PredictReport(
        str(out), str(probabilities) if probabilities else None, grid.height, grid.width, len(grid), num_classes
    )
