"""A model's prediction preview: one chip of its dataset as RGB, its true mask and the predicted mask.

Rendered server-side as PNGs because the model, the weights and the GeoTIFFs all live beside the
API, not in the browser. torch, rasterio and the model builder are imported inside
:func:`render_preview` only: the API must start without loading the training stack (STYLE §1), and
only someone opening a model page pays for it. One inference yields all three images, so results
are cached per (model, chip) and concurrent requests for the three images wait for one computation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces.errors import DataError, NotFound

from .raster import png_bytes

__all__ = ["png_bytes", "class_palette", "render_preview", "PREVIEW_KINDS"]

PREVIEW_KINDS = ("input", "truth", "prediction")
_SPLITS = ("test", "val", "train")
_BASE_COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


def class_palette(num_classes: int) -> np.ndarray:
    colours = [_BASE_COLOURS[i % len(_BASE_COLOURS)] for i in range(num_classes)]
    return np.asarray(colours, np.uint8).reshape(-1, 3)


def _mask_rgb(mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    palette = np.concatenate([class_palette(num_classes), np.zeros((1, 3), np.uint8)])
    index = np.where((mask == ignore_index) | (mask >= num_classes), num_classes, mask).astype(np.int64)
    return palette[index]


def _rgb(image: np.ndarray, bands: list[str], valid: np.ndarray) -> np.ndarray:
    """Pick red/green/blue by name (else the first bands) and stretch each to its 2–98 percentiles."""
    lowered = [b.lower() for b in bands]
    if all(c in lowered for c in ("red", "green", "blue")):
        picks = [lowered.index(c) for c in ("red", "green", "blue")]
    else:
        picks = [min(i, len(bands) - 1) for i in range(3)]
    out = np.zeros((*image.shape[1:], 3), np.uint8)
    for channel, band in enumerate(picks):
        values = image[band].astype(np.float32)
        sample = values[valid] if valid.any() else values.ravel()
        lo, hi = np.percentile(sample, [2, 98]) if sample.size else (0.0, 1.0)
        scaled = np.clip((values - lo) / ((hi - lo) or 1.0), 0, 1)
        out[..., channel] = (scaled * 255).astype(np.uint8)
    out[~valid] = 0
    return out


class _PreviewCache:
    def __init__(self, size: int = 16) -> None:
        self.items: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self.locks: dict[tuple, threading.Lock] = {}
        self.guard = threading.Lock()
        self.size = size

    def lock_for(self, key: tuple) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(key, threading.Lock())

    def get(self, key: tuple) -> dict[str, Any] | None:
        with self.guard:
            return self.items.get(key)

    def put(self, key: tuple, value: dict[str, Any]) -> None:
        with self.guard:
            self.items[key] = value
            while len(self.items) > self.size:
                old, _ = self.items.popitem(last=False)
                self.locks.pop(old, None)


_cache = _PreviewCache()


def render_preview(model: Any, chip: int = 0) -> dict[str, Any]:
    """PNG bytes for input, truth and prediction of chip ``chip`` of the model's dataset, plus metadata."""
    key = (model.id, str(model.artifacts.get("weights.safetensors")), chip)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    with _cache.lock_for(key):
        cached = _cache.get(key)
        if cached is None:
            cached = _compute(model, chip)
            _cache.put(key, cached)
    return cached


def _compute(model: Any, chip: int) -> dict[str, Any]:
    data_root = (model.training or {}).get("data_root")
    weights = (model.artifacts or {}).get("weights.safetensors")
    if not data_root or not Path(data_root).is_dir():
        raise DataError(f"model {model.id}: its dataset folder {data_root!r} is not on this machine")
    if not weights or not Path(weights).is_file():
        raise NotFound(f"model {model.id}: weights.safetensors is missing from storage ({weights})")

    import torch

    from search_spaces.builder import model_from_descriptor
    from trainers.datasets import DatasetInfo, read_chip
    from trainers.export import load_weights

    info = DatasetInfo.load(data_root)
    data = model.data or {}
    bands = list(data.get("bands") or info.bands)
    band_index = info.band_indexes(bands)
    split = next((s for s in _SPLITS if s in info.splits and info.chip_ids(s)), None)
    if split is None:
        raise DataError(f"dataset {data_root} has no chips to preview")
    ids = info.chip_ids(split)
    chip_id = ids[chip % len(ids)]
    image, mask, invalid = read_chip(info, *info.chip_paths(split, chip_id))
    image = image[band_index]
    classes = list(data.get("classes") or info.classes)
    ignore = int(data.get("ignore_index", info.ignore_index))
    mean = np.asarray(data.get("mean") or [0.0] * len(bands), np.float32)[:, None, None]
    std = np.asarray(data.get("std") or [1.0] * len(bands), np.float32)[:, None, None]
    x = (image.astype(np.float32) - mean) / np.where(std == 0, 1.0, std)
    valid = np.ones(mask.shape, bool) if invalid is None else ~invalid
    x[:, ~valid] = 0.0
    net = model_from_descriptor(model.descriptor, len(bands), len(classes)).eval()
    load_weights(net, weights)
    with torch.inference_mode():
        logits = net(torch.from_numpy(x)[None])
    predicted = logits.argmax(1)[0].numpy().astype(np.uint8)
    predicted[~valid] = ignore
    labelled = mask != ignore
    accuracy = float((predicted[labelled] == mask[labelled]).mean()) if labelled.any() else None
    return {
        "input": png_bytes(_rgb(image, bands, valid)),
        "truth": png_bytes(_mask_rgb(mask, len(classes), ignore)),
        "prediction": png_bytes(_mask_rgb(predicted, len(classes), ignore)),
        "meta": {
            "split": split,
            "chip_id": chip_id,
            "chips": len(ids),
            "size": list(mask.shape),
            "classes": classes,
            "palette": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in class_palette(len(classes)).tolist()],
            "pixel_accuracy": accuracy,
        },
    }
