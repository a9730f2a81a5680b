"""The project's dataset format and its reader: GeoTIFF chips + masks, selected by band name.

Layout (written by :mod:`trainers.demo_data` and :mod:`trainers.importer`, read here)::

    ROOT/dataset.yaml                  name, bands, classes, ignore_index, splits (split -> folder)
    ROOT/<folder>/images/<chip>.tif    multi-band GeoTIFF (CRS, transform, nodata)
    ROOT/<folder>/masks/<chip>.tif     single-band uint8, value = class index or ignore_index
    ROOT/stats.json                    per-band mean/std over the train split (cache)

Why it looks like this: a trial on a Ray worker needs a dataset it can read fast, many times, with
no decoding of JPEG/PNG and no re-tiling; chips are small, so a preloaded split is a few numpy
arrays that pickle cheaply to workers. Normalisation statistics come from the train split only and
are cached beside the data so every trial normalises identically without re-reading the chips.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rasterio.errors import RasterioError
from rasterio.windows import Window
from torch.utils.data import Dataset

from search_spaces.errors import DataError
from trainers._raster import atomic_write_text, nodata_pixels, open_raster

#: libyaml's safe loader when PyYAML was built with it (several times faster), else the pure-Python one
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = [
    "DATASET_FILE",
    "STATS_FILE",
    "DatasetInfo",
    "band_stats",
    "read_chip",
    "ChipError",
    "SegmentationDataset",
]

DATASET_FILE = "dataset.yaml"
STATS_FILE = "stats.json"
_CHIP_SUFFIXES = (".tif", ".tiff")
_DEFAULT_SPLITS = {"train": "train", "val": "val", "test": "test"}


@dataclass(frozen=True)
class DatasetInfo:
    """What ``dataset.yaml`` says, checked: the contract between data and model builder."""

    name: str
    bands: tuple[str, ...]
    classes: tuple[str, ...]
    root: Path
    ignore_index: int = 255
    splits: dict[str, str] = field(default_factory=lambda: dict(_DEFAULT_SPLITS))
    source: str | None = None
    crs: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path) -> DatasetInfo:
        """Read and check ``ROOT/dataset.yaml``; every problem is a DataError naming the file."""
        root = Path(root).expanduser().resolve()
        path = root / DATASET_FILE
        if not root.is_dir():
            raise DataError(f"{root}: dataset folder not found; create one with `geonas data demo {root}`")
        if not path.is_file():
            raise DataError(
                f"{path}: not found; a dataset folder needs a dataset.yaml "
                "(write one with `geonas data demo` or `geonas data import`)"
            )
        try:
            raw = yaml.load(path.read_text(), Loader=_YAML_LOADER)
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected a mapping with name, bands, classes, splits")
        return cls.from_mapping(raw, root, where=str(path))

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], root: Path, where: str = DATASET_FILE) -> DatasetInfo:
        def names(key: str) -> tuple[str, ...]:
            value = raw.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise DataError(f"{where}: '{key}' must be a non-empty list of names, got {value!r}")
            dupes = sorted({v for v in value if value.count(v) > 1})
            if dupes:
                raise DataError(f"{where}: '{key}' lists {', '.join(dupes)} more than once")
            return tuple(value)

        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: 'name' must be a non-empty string")
        bands, classes = names("bands"), names("classes")
        ignore_index = raw.get("ignore_index", 255)
        if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
            raise DataError(f"{where}: 'ignore_index' must be an integer in 0..255 (masks are uint8)")
        if ignore_index < len(classes):
            raise DataError(
                f"{where}: ignore_index {ignore_index} is also the class '{classes[ignore_index]}'; "
                f"use a value >= {len(classes)} (255 is usual)"
            )
        splits = raw.get("splits", _DEFAULT_SPLITS)
        if not isinstance(splits, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in splits.items()
        ):
            raise DataError(f"{where}: 'splits' must map split names to folder names, got {splits!r}")
        if "train" not in splits:
            raise DataError(f"{where}: 'splits' needs a 'train' entry (statistics come from it)")
        known = {"name", "bands", "classes", "ignore_index", "splits", "source", "crs"}
        return cls(
            name=name,
            bands=bands,
            classes=classes,
            root=root,
            ignore_index=ignore_index,
            splits=dict(splits),
            source=None if raw.get("source") is None else str(raw["source"]),
            crs=None if raw.get("crs") is None else str(raw["crs"]),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "bands": list(self.bands),
            "classes": list(self.classes),
            "ignore_index": self.ignore_index,
            "splits": dict(self.splits),
        }
        if self.source is not None:
            out["source"] = self.source
        if self.crs is not None:
            out["crs"] = self.crs
        out.update(self.extra)
        return out

    def write(self) -> Path:
        """Write ``dataset.yaml`` into :attr:`root` (atomically); returns its path."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / DATASET_FILE
        atomic_write_text(path, yaml.safe_dump(self.to_mapping(), sort_keys=False))
        return path

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_dir(self, split: str) -> Path:
        if split not in self.splits:
            raise DataError(f"{self.root / DATASET_FILE}: no split '{split}'; available: {', '.join(self.splits)}")
        return self.root / self.splits[split]

    def chip_ids(self, split: str) -> list[str]:
        """Sorted chip ids of a split (sorted so that a seeded subset is the same on every machine)."""
        folder = self.split_dir(split)
        images, masks = folder / "images", folder / "masks"
        for sub in (images, masks):
            if not sub.is_dir():
                raise DataError(f"{sub}: folder not found (split '{split}' of dataset '{self.name}')")
        ids = sorted(p.stem for p in images.iterdir() if p.suffix.lower() in _CHIP_SUFFIXES)
        if not ids:
            raise DataError(f"{images}: no .tif chips in split '{split}'")
        return ids

    def chip_paths(self, split: str, chip_id: str) -> tuple[Path, Path]:
        """(image, mask) paths of one chip; a missing mask is a DataError naming both."""
        folder = self.split_dir(split)
        image = _existing(folder / "images", chip_id)
        mask = _existing(folder / "masks", chip_id)
        if image is None:
            raise DataError(f"{folder / 'images' / chip_id}.tif: image chip not found")
        if mask is None:
            raise DataError(f"{image}: no mask for this chip; expected {folder / 'masks' / chip_id}.tif")
        return image, mask

    def band_indexes(self, bands: Sequence[str] | None) -> list[int]:
        """0-based file positions of ``bands`` (all when None); unknown names list the valid ones."""
        if bands is None:
            return list(range(len(self.bands)))
        if isinstance(bands, str):
            bands = [bands]
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise DataError(
                f"band {', '.join(repr(b) for b in missing)} not in {self.root / DATASET_FILE}; "
                f"available: {', '.join(self.bands)}"
            )
        if not bands:
            raise DataError(f"select at least one band; available: {', '.join(self.bands)}")
        return [self.bands.index(b) for b in bands]


def _existing(folder: Path, chip_id: str) -> Path | None:
    for suffix in _CHIP_SUFFIXES:
        path = folder / f"{chip_id}{suffix}"
        if path.is_file():
            return path
    return None


# --------------------------------------------------------------------------- statistics


def _train_fingerprint(info: DatasetInfo) -> tuple[str, list[Path]]:
    """A hash of the train images' names, sizes and mtimes: the cache key of stats.json."""
    paths = [info.chip_paths("train", cid)[0] for cid in info.chip_ids("train")]
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.relative_to(info.root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(",".join(info.bands).encode())
    return digest.hexdigest(), paths


def _row_windows(height: int, width: int, rows: int = 1024) -> list[Window]:
    return [Window(0, r, width, min(rows, height - r)) for r in range(0, height, rows)]


def _chip_sums(path: Path, count: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(Σx, Σx², valid pixels) per band of one chip, read in row windows; DataError if unreadable."""
    total = np.zeros(count, np.float64)
    total_sq = np.zeros(count, np.float64)
    pixels = 0
    with open_raster(path) as src:
        if src.count != count:
            raise DataError(f"{path}: has {src.count} bands but dataset.yaml lists {count}")
        # Row windows keep memory flat even when a "chip" is a large scene.
        for window in _row_windows(src.height, src.width):
            try:
                data = src.read(window=window)
            except RasterioError as exc:
                raise DataError(f"{path}: unreadable ({exc}); re-export or remove the chip") from exc
            bad = nodata_pixels(data, src.nodata)
            flat = data.reshape(count, -1).astype(np.float64)
            if bad is not None:
                flat = flat[:, ~bad.reshape(-1)]
            total += flat.sum(axis=1)
            total_sq += np.square(flat).sum(axis=1)
            pixels += flat.shape[1]
    return total, total_sq, pixels


def _compute_stats(info: DatasetInfo, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """(mean, std, valid pixels, unreadable chips). An unreadable chip is left out of the statistics
    and named in ``stats.json``; the trial that reads it fails with its name and quarantines it."""
    count = len(info.bands)
    total = np.zeros(count, np.float64)
    total_sq = np.zeros(count, np.float64)
    pixels = 0
    unreadable: list[str] = []
    for path in paths:
        try:
            chip_total, chip_sq, chip_pixels = _chip_sums(path, count)
        except DataError as exc:
            unreadable.append(str(exc))
            continue
        total += chip_total
        total_sq += chip_sq
        pixels += chip_pixels
    if pixels == 0:
        raise DataError(f"{info.split_dir('train')}: the train split has no valid (non-nodata) pixels")
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - np.square(mean), 0.0))
    std = np.where(std > 1e-12, std, 1.0)  # a constant band must not blow up to inf
    return mean, std, pixels, unreadable


def band_stats(info: DatasetInfo, bands: Sequence[str] | None = None) -> tuple[list[float], list[float]]:
    """Per-band (mean, std) over the train split's valid pixels, for ``bands`` (all when None).

    Cached in ``ROOT/stats.json`` for every band at once; recomputed when the train chips' names,
    sizes or mtimes change. The file is replaced atomically, so concurrent trials that compute it at
    the same time just write the same numbers twice.
    """
    indexes = info.band_indexes(bands)
    fingerprint, paths = _train_fingerprint(info)
    path = info.root / STATS_FILE
    cached: dict[str, Any] | None = None
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = None  # a damaged cache is recomputed, not an error
    if not (isinstance(cached, dict) and cached.get("fingerprint") == fingerprint):
        mean, std, pixels, unreadable = _compute_stats(info, paths)
        cached = {
            "fingerprint": fingerprint,
            "split": "train",
            "chips": len(paths) - len(unreadable),
            "pixels": pixels,
            "unreadable": unreadable,
            "bands": {b: {"mean": float(m), "std": float(s)} for b, m, s in zip(info.bands, mean, std, strict=True)},
        }
        try:
            atomic_write_text(path, json.dumps(cached, indent=1))
        except OSError:
            pass  # a read-only dataset still works; it just recomputes next time
    per_band = cached["bands"]
    names = [info.bands[i] for i in indexes]
    return [per_band[b]["mean"] for b in names], [per_band[b]["std"] for b in names]


# --------------------------------------------------------------------------- chips


def read_chip(info: DatasetInfo, image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read one chip: (all bands [C,H,W] in file dtype, mask uint8 [H,W], nodata bool [H,W] or None).

    Nodata pixels are already ``ignore_index`` in the returned mask. Every inconsistency is a
    DataError that names the file.
    """
    with open_raster(image_path) as src, open_raster(mask_path) as msrc:
        if src.count != len(info.bands):
            raise DataError(
                f"{image_path}: has {src.count} bands but dataset.yaml lists {len(info.bands)} "
                f"({', '.join(info.bands)})"
            )
        if msrc.count != 1:
            raise DataError(f"{mask_path}: a mask must have 1 band, this one has {msrc.count}")
        if (src.height, src.width) != (msrc.height, msrc.width):
            raise DataError(
                f"{mask_path}: mask is {msrc.width}x{msrc.height} px but its image {image_path.name} is "
                f"{src.width}x{src.height}; image and mask must have the same size"
            )
        if src.crs is not None and msrc.crs is not None and not src.transform.almost_equals(msrc.transform):
            raise DataError(f"{mask_path}: geotransform differs from its image {image_path.name}")
        try:
            image = src.read()
        except RasterioError as exc:
            raise DataError(f"{image_path}: unreadable ({exc}); re-export or remove the chip") from exc
        try:
            mask = msrc.read(1)
        except RasterioError as exc:
            raise DataError(f"{mask_path}: unreadable ({exc}); re-export or remove the chip") from exc
        nodata = src.nodata
    if mask.dtype != np.uint8:
        if mask.min() < 0 or mask.max() > 255:
            raise DataError(f"{mask_path}: mask values must fit in uint8 (0..255)")
        mask = mask.astype(np.uint8)
    bad = (mask >= info.num_classes) & (mask != info.ignore_index)
    if bad.any():
        values = sorted(int(v) for v in np.unique(mask[bad]))[:10]
        raise DataError(
            f"{mask_path}: mask values {values} are outside the classes 0..{info.num_classes - 1} "
            f"({', '.join(info.classes)}) and not ignore_index {info.ignore_index}"
        )
    invalid = nodata_pixels(image, nodata)
    if invalid is not None:
        mask = mask.copy()
        mask[invalid] = info.ignore_index
    return image, mask, invalid


class ChipError(DataError):
    """One chip of a split cannot be read; says which (``split``, ``chip_id``, ``path``) and why."""

    def __init__(self, split: str, chip_id: str, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.split, self.chip_id, self.path = split, chip_id, Path(path)

    def __reduce__(self):  # keeps its fields when Ray ships it between processes
        return (type(self), (self.split, self.chip_id, self.path, str(self)))


class SegmentationDataset(Dataset):
    """A split as a torch Dataset of ``(image float32 [C,H,W], mask int64 [H,W])``.

    Images are normalised with the train split's per-band statistics; nodata pixels are 0 after
    normalisation and ``ignore_index`` in the mask. With ``preload`` every chip is read once here
    and kept as compact numpy arrays in the file dtype (uint8/uint16 stay small), so epochs never
    touch the disk and the object pickles cheaply to Ray workers (numpy buffers go out of band).

    ``subset`` picks that many chips at random with ``seed`` (all when the split has fewer): the
    same ids on every machine, because the candidates are sorted first. ``exclude`` drops chip ids
    after the subset is drawn (so the rest of the subset stays the same). A chip that cannot be read
    raises :class:`ChipError`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        bands: list[str] | None = None,
        subset: int | None = None,
        seed: int = 0,
        preload: bool = True,
        exclude: Collection[str] = (),
    ) -> None:
        self.info = DatasetInfo.load(root)
        self.split = split
        self._file_bands = self.info.band_indexes(bands)
        self.bands: list[str] = [self.info.bands[i] for i in self._file_bands]
        ids = self.info.chip_ids(split)
        if subset is not None:
            if subset < 1:
                raise DataError(f"subset must be a positive number of chips, got {subset}")
            if subset < len(ids):
                pick = np.random.default_rng(seed).choice(len(ids), size=subset, replace=False)
                ids = [ids[i] for i in sorted(pick)]
        if exclude:
            excluded = set(exclude)
            ids = [i for i in ids if i not in excluded]
        self.chip_ids: list[str] = ids
        mean, std = band_stats(self.info, self.bands)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.preloaded = preload
        self._images: np.ndarray | list[np.ndarray] | None = None
        self._masks: np.ndarray | list[np.ndarray] | None = None
        self._nodata: dict[int, np.ndarray] = {}
        if preload:
            self._preload()

    # -- model-builder contract
    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def in_chans(self) -> int:
        return len(self.bands)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.classes)

    @property
    def ignore_index(self) -> int:
        return self.info.ignore_index

    def __len__(self) -> int:
        return len(self.chip_ids)

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        chip_id = self.chip_ids[index]
        image_path, mask_path = self.info.chip_paths(self.split, chip_id)
        try:
            image, mask, invalid = read_chip(self.info, image_path, mask_path)
        except DataError as exc:
            raise ChipError(self.split, chip_id, image_path, str(exc)) from exc
        return image[self._file_bands], mask, invalid

    def _preload(self) -> None:
        images, masks = [], []
        for i in range(len(self.chip_ids)):
            image, mask, invalid = self._read(i)
            images.append(image)
            masks.append(mask)
            if invalid is not None:
                self._nodata[i] = invalid
        # One contiguous array per split when the chips agree (they do for generated/imported data):
        # cheaper to pickle and to ship through Ray's object store than thousands of small arrays.
        shapes = {a.shape for a in images}
        dtypes = {a.dtype for a in images}
        if len(shapes) == 1 and len(dtypes) == 1:
            self._images, self._masks = np.stack(images), np.stack(masks)
        else:
            self._images, self._masks = images, masks

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Unnormalised (image in file dtype, mask uint8, nodata or None) of one chip."""
        if self._images is not None and self._masks is not None:
            return self._images[index], self._masks[index], self._nodata.get(index)
        return self._read(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        image, mask, invalid = self.raw(index)
        x = (image.astype(np.float32) - self.mean[:, None, None]) / self.std[:, None, None]
        if invalid is not None:
            x[:, invalid] = 0.0
        return torch.from_numpy(x), torch.from_numpy(mask.astype(np.int64))

    def class_pixels(self) -> np.ndarray:
        """Labelled pixels per class (int64 [num_classes]): class shares, loss weights."""
        counts = np.zeros(self.num_classes, np.int64)
        for i in range(len(self)):
            mask = self.raw(i)[1]
            counts += np.bincount(mask[mask != self.ignore_index].ravel(), minlength=self.num_classes)[
                : self.num_classes
            ]
        return counts

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset({self.info.name!r}, split={self.split!r}, chips={len(self)}, "
            f"bands={self.bands}, classes={self.num_classes}, preloaded={self.preloaded})"
        )
