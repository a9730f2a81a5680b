"""Chips for CSF: every source becomes one in-memory :class:`ChipSet` of band stacks.

CSF and its k-NN evaluation need many small chips, each read many times, plus per-chip labels
(the dominant class) for k-NN and masks for the transfer check. Chips are small, so a source is
read once into a contiguous float32 array that pickles cheaply to Ray workers. Sources are a
registry (``CHIP_SOURCES``, name → loader); :func:`load_chips` takes ``{"kind": name, ...}``.

- ``multisensor``: a folder from :func:`csf.multisensor.write_multisensor_dataset` (or the same
  layout over real sensor files), read through the co-registering stack, window by window.
- ``geotiff``: the project's dataset format (``dataset.yaml`` + GeoTIFF chips), through
  :class:`trainers.datasets.SegmentationDataset`.
- ``dubai``: the raw Dubai aerial folder (RGB JPEG + colour PNG masks, no georeferencing), cut into
  a grid of chips; used when the dataset has not been imported into the GeoTIFF format.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces.errors import DataError, SpecError

__all__ = ["ChipSet", "CHIP_SOURCES", "register_source", "load_chips", "dominant_class"]


@dataclass
class ChipSet:
    """Chips as one array: ``images`` (N, C, S, S) float32 unnormalised, with optional labels."""

    images: np.ndarray
    band_names: list[str]
    sensors: dict[str, list[str]]
    labels: np.ndarray | None = None  # (N,) dominant class, for k-NN
    masks: np.ndarray | None = None  # (N, S, S) uint8, class or ignore_index, for transfer
    classes: list[str] = field(default_factory=list)
    ignore_index: int = 255
    groups: np.ndarray | None = None  # (N,) place of each chip (e.g. its plot): k-NN never pairs a place with itself

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != len(self.band_names):
            raise DataError(f"chips have shape {self.images.shape} but {len(self.band_names)} band names")
        if len(self.images) == 0:
            raise DataError("the source gave no chips; check its folder and filters")

    def __len__(self) -> int:
        return len(self.images)

    def band_stats(self) -> tuple[list[float], list[float]]:
        """Per-band mean and std over all chips (std floored so constant bands do not blow up)."""
        mean = self.images.mean(axis=(0, 2, 3), dtype=np.float64)
        std = self.images.std(axis=(0, 2, 3), dtype=np.float64)
        return mean.tolist(), np.maximum(std, 1e-6).tolist()

    def normalised(self, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
        m = np.asarray(mean, np.float32)[None, :, None, None]
        s = np.asarray(std, np.float32)[None, :, None, None]
        return (self.images - m) / s

    def subset(self, index: np.ndarray | Sequence[int]) -> ChipSet:
        index = np.asarray(index)
        return ChipSet(
            self.images[index], self.band_names, self.sensors,
            None if self.labels is None else self.labels[index],
            None if self.masks is None else self.masks[index],
            self.classes, self.ignore_index,
            None if self.groups is None else self.groups[index],
        )


def dominant_class(mask: np.ndarray, num_classes: int, ignore_index: int = 255) -> int:
    """The class with most labelled pixels in ``mask`` (-1 when nothing is labelled)."""
    valid = mask[mask != ignore_index]
    if valid.size == 0:
        return -1
    return int(np.bincount(valid.ravel(), minlength=num_classes).argmax())


CHIP_SOURCES: dict[str, Callable[..., ChipSet]] = {}


def register_source(name: str) -> Callable[[Callable[..., ChipSet]], Callable[..., ChipSet]]:
    def deco(fn: Callable[..., ChipSet]) -> Callable[..., ChipSet]:
        CHIP_SOURCES[name] = fn
        return fn

    return deco


def load_chips(spec: dict[str, Any]) -> ChipSet:
    """Load chips from ``{"kind": <source>, ...loader arguments}``."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in CHIP_SOURCES:
        raise SpecError(f"unknown chip source {kind!r}; valid: {sorted(CHIP_SOURCES)}", field="data.kind")
    try:
        return CHIP_SOURCES[kind](**spec)
    except TypeError as exc:
        raise SpecError(f"bad arguments for chip source {kind!r}: {exc}", field="data") from None


def _pick(n: int, max_chips: int | None, seed: int) -> np.ndarray:
    if max_chips is None or max_chips >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_chips, replace=False))


@register_source("multisensor")
def load_multisensor_chips(
    root: str, sensors: Sequence[str] | None = None, max_chips: int | None = None, seed: int = 0
) -> ChipSet:
    """Chips of a multi-sensor folder, all bands (or only ``sensors``) on the finest grid."""
    from rasterio.windows import Window

    from .multisensor import open_multisensor

    stack, manifest = open_multisensor(root)
    with stack:
        wanted = list(sensors) if sensors else list(stack.sensors)
        unknown = [s for s in wanted if s not in stack.sensors]
        if unknown:
            raise SpecError(f"sensors {unknown} not in {root}; available: {list(stack.sensors)}",
                            field="data.sensors")
        size = int(manifest["size"])
        chips = [manifest["chips"][i] for i in _pick(len(manifest["chips"]), max_chips, seed)]
        keep = np.concatenate([np.arange(len(stack.sensors[s])) + _offset(stack.sensors, s) for s in wanted])
        images = np.stack([stack.read(Window(c["col"], c["row"], size, size))[keep] for c in chips])
        band_names = [stack.band_names[i] for i in keep]
        return ChipSet(
            images=images.astype(np.float32),
            band_names=band_names,
            sensors={s: stack.sensors[s] for s in wanted},
            labels=np.array([c["label"] for c in chips], np.int64),
            classes=list(manifest.get("classes", [])),
            groups=_plot_groups(chips),
        )


def _plot_groups(chips: Sequence[dict[str, Any]]) -> np.ndarray | None:
    """Each chip's plot as an integer id, when every chip names one (windows in a plot overlap)."""
    if not chips or any("plot" not in c for c in chips):
        return None
    ids: dict[Any, int] = {}
    return np.array([ids.setdefault(c["plot"], len(ids)) for c in chips], np.int64)


def _offset(sensors: dict[str, list[str]], name: str) -> int:
    total = 0
    for key, bands in sensors.items():
        if key == name:
            return total
        total += len(bands)
    raise KeyError(name)


@register_source("geotiff")
def load_geotiff_chips(
    root: str, split: str = "train", bands: Sequence[str] | None = None,
    max_chips: int | None = None, seed: int = 0,
) -> ChipSet:
    """Chips of a dataset in the project's GeoTIFF format (``trainers.datasets``)."""
    from trainers.datasets import SegmentationDataset

    ds = SegmentationDataset(root, split, bands=list(bands) if bands else None, subset=max_chips, seed=seed)
    images, masks = [], []
    for i in range(len(ds)):
        image, mask, invalid = ds.raw(i)
        image = image.astype(np.float32)
        if invalid is not None:  # nodata is masked, not zero: fill with the band mean of the train split
            image[:, invalid] = ds.mean[:, None]
        images.append(image)
        masks.append(mask)
    masks_arr = np.stack(masks).astype(np.uint8)
    labels = np.array([dominant_class(m, ds.num_classes, ds.ignore_index) for m in masks_arr], np.int64)
    return ChipSet(np.stack(images), list(ds.bands), {"image": list(ds.bands)}, labels, masks_arr,
                   ds.class_names, ds.ignore_index)


def _read_rgb(path: Path) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(indexes=[1, 2, 3])


@register_source("dubai")
def load_dubai_chips(
    root: str, tiles: Sequence[int] = (1, 2, 3, 4, 5, 6), chip: int = 64, stride: int | None = None,
    max_chips: int | None = None, seed: int = 0, min_labelled: float = 0.5,
) -> ChipSet:
    """Chips cut on a grid from the raw Dubai aerial images of ``tiles`` (3 bands, 6 classes).

    The JPEGs carry no georeferencing and decode as a whole, so each image is read once and cut.
    Masks are decoded as the importer decodes them (:func:`trainers.importer.read_mask` with
    :func:`trainers.importer.dubai_classes`): black (unannotated) pixels become ``ignore_index``
    (255); chips with less than ``min_labelled`` labelled pixels are dropped.
    """
    from trainers.importer import dubai_classes, read_mask

    base = Path(root)
    classes_file = base / "classes.json"
    if not classes_file.is_file():
        raise DataError(f"{classes_file} not found: is {root} the Dubai aerial folder?")
    table = dubai_classes(base)
    stride = stride or chip
    images, masks = [], []
    for tile in tiles:
        folder = base / f"tile_{tile}"
        files = sorted((folder / "images").glob("*.jpg"))
        if not files:
            raise DataError(f"no images in {folder / 'images'}; valid tiles are 1..8")
        for image_path in files:
            rgb = _read_rgb(image_path)
            mask = read_mask(folder / "masks" / f"{image_path.stem}.png", table, 255)
            h, w = mask.shape
            for top in range(0, h - chip + 1, stride):
                for left in range(0, w - chip + 1, stride):
                    m = mask[top:top + chip, left:left + chip]
                    if (m != 255).mean() < min_labelled:
                        continue
                    images.append(rgb[:, top:top + chip, left:left + chip])
                    masks.append(m)
    if not images:
        raise DataError(f"no {chip}-px chips with {min_labelled:.0%} labelled pixels in tiles {list(tiles)}")
    pick = _pick(len(images), max_chips, seed)
    images_arr = np.stack([images[i] for i in pick]).astype(np.float32)
    masks_arr = np.stack([masks[i] for i in pick])
    names = list(table.names)
    labels = np.array([dominant_class(m, len(names)) for m in masks_arr], np.int64)
    bands = ["red", "green", "blue"]
    return ChipSet(images_arr, bands, {"aerial": bands}, labels, masks_arr, names, 255)
