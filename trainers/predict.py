"""Predict a whole scene of any size: overlapping tiles, blended edges, a georeferenced mask out.

The scene is read with rasterio windows one row of tiles at a time and the output is written the
same way, so memory holds one strip (``tile`` rows × scene width) whatever the scene's size. Tile
predictions are blended with a weight that falls towards the tile's edges, which removes seams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from search_spaces.errors import DataError

from .loop import Device, pick_device
from .tiling import tile_starts

__all__ = ["PredictReport", "predict_scene", "blend_weights", "auto_batch_size"]

NODATA_CLASS = 255


@dataclass(frozen=True)
class PredictReport:
    out: str
    probabilities: str | None
    height: int
    width: int
    tiles: int
    classes: int


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """A [tile, tile] weight: 1 in the middle, ramping down over ``overlap`` px towards each edge."""
    ramp = np.ones(tile, np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return np.outer(ramp, ramp)


def auto_batch_size(device: Device, tile: int, bands: int) -> int:
    """Tiles per forward pass from free memory (a conservative 400× the input tensor per tile)."""
    per_tile = tile * tile * bands * 4 * 400
    if device.is_cuda:
        free, _ = torch.cuda.mem_get_info(device.torch_device)
        return int(np.clip(free // per_tile, 1, 64))
    return 4


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
) -> PredictReport:
    """Write the class mask of ``scene`` to ``out`` (and class probabilities ×255 to ``probabilities``).

    ``band_indexes`` are the 1-based scene bands the model reads, in the model's order.
    """
    if overlap * 2 >= tile:
        raise DataError(f"overlap {overlap} px must be less than half the tile ({tile} px)")
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
            raise DataError(
                f"scene {scene} has {src.count} bands; the model reads bands {list(band_indexes)}"
            )
        height, width = src.height, src.width
        t = min(tile, max(height, width))
        stride = t - overlap
        weights = blend_weights(t, overlap if min(height, width) > t else 0)
        batch = batch_size or auto_batch_size(device, t, len(band_indexes))
        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "crs": src.crs,
            "transform": src.transform,
            "compress": "deflate",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        dst = rasterio.open(out, "w", **profile, count=1, dtype="uint8", nodata=NODATA_CLASS)
        prob = (
            rasterio.open(probabilities, "w", **profile, count=num_classes, dtype="uint8", nodata=None)
            if probabilities
            else None
        )
        rows, cols = tile_starts(height, t, stride), tile_starts(width, t, stride)
        total, done = len(rows) * len(cols), 0
        try:
            strip_top = 0
            acc = np.zeros((num_classes, t, width), np.float64)
            wsum = np.zeros((t, width), np.float64)
            valid = np.zeros((t, width), bool)
            for ri, y in enumerate(rows):
                # shift the strip so it starts at this row of tiles
                shift = y - strip_top
                if shift:
                    acc = np.concatenate([acc[:, shift:], np.zeros((num_classes, shift, width))], axis=1)
                    wsum = np.concatenate([wsum[shift:], np.zeros((shift, width))], axis=0)
                    valid = np.concatenate([valid[shift:], np.zeros((shift, width), bool)], axis=0)
                    strip_top = y
                windows = [Window(x, y, t, t) for x in cols]
                for i in range(0, len(windows), batch):
                    chunk = windows[i : i + batch]
                    images, masks = [], []
                    for w in chunk:
                        data = src.read(
                            list(band_indexes), window=w, boundless=True, fill_value=0, masked=True
                        )
                        present = ~np.ma.getmaskarray(data).all(axis=0)
                        x = (np.ma.filled(data, 0).astype(np.float32) - mean_a) / std_a
                        x[:, ~present] = 0.0
                        images.append(x)
                        masks.append(present)
                    with torch.inference_mode(), device.autocast():
                        logits = model(device.batch(torch.from_numpy(np.stack(images))))
                    probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
                    for w, p, present in zip(chunk, probs, masks, strict=True):
                        h_in = min(t, height - y)
                        w_in = min(t, width - int(w.col_off))
                        sl = np.s_[:h_in, int(w.col_off) : int(w.col_off) + w_in]
                        acc[(slice(None), *sl)] += p[:, :h_in, :w_in] * weights[:h_in, :w_in]
                        wsum[sl] += weights[:h_in, :w_in]
                        valid[sl] |= present[:h_in, :w_in]
                    done += len(chunk)
                    if progress:
                        progress(done, total)
                last = ri == len(rows) - 1
                flush = (min(t, height - y)) if last else rows[ri + 1] - y
                p = acc[:, :flush] / np.maximum(wsum[:flush], 1e-9)
                labels = p.argmax(0).astype(np.uint8)
                labels[~valid[:flush]] = NODATA_CLASS
                dst.write(labels[None], window=Window(0, y, width, flush))
                if prob is not None:
                    prob.write(
                        np.clip(np.round(p * 255), 0, 255).astype(np.uint8), window=Window(0, y, width, flush)
                    )
        finally:
            dst.close()
            if prob is not None:
                prob.close()
    return PredictReport(
        str(out), str(probabilities) if probabilities else None, height, width, total, num_classes
    )
