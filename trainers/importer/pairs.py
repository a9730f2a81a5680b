"""Image/mask pairs: finding them, assigning whole scenes to splits, and checking them before any cut.

An image pairs with the mask whose path is the same after dropping the images/masks folder and the
suffix. Every pair's headers are read (sizes, band names, mask kind) before a pixel is cut, and
every bad pair is collected, so one :class:`BadPairs` error can list them all.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterio.enums import ColorInterp

from search_spaces.errors import DataError
from trainers._raster import open_raster

from .classes import ClassTable
from .masks import _MaskDecoder

__all__ = ["BadPairs"]

_IMAGE_SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".img", ".vrt"}
_PAIR_FOLDERS = {"images", "image", "imgs", "masks", "mask", "labels", "label", "annotations", "gt"}


# --------------------------------------------------------------------------- scenes


@dataclass
class _Scene:
    key: str  # image path relative to src, without the images/masks folder and suffix
    image: Path
    mask: Path | None  # None: no mask pairs with this image (a bad pair if the scene is in a split)
    rel: str  # image path relative to src (what split globs match)
    mask_rel: str | None = None  # mask path relative to src


def _pair_key(rel: Path) -> str:
    parts = [p for p in rel.parent.parts if p.lower() not in _PAIR_FOLDERS]
    return "/".join([*parts, rel.stem])


def _find_scenes(src: Path, image_glob: str, mask_glob: str) -> list[_Scene]:
    def files(pattern: str) -> list[Path]:
        return sorted(
            p for p in src.glob(pattern)
            if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
        )  # fmt: skip

    images, masks = files(image_glob), files(mask_glob)
    if not images:
        raise DataError(f"{src}: no images match {image_glob!r} (suffixes {', '.join(sorted(_IMAGE_SUFFIXES))})")
    mask_by_key: dict[str, Path] = {}
    for m in masks:
        mask_by_key.setdefault(_pair_key(m.relative_to(src)), m)
    scenes, seen = [], {}
    for img in images:
        if img in mask_by_key.values():
            continue  # image and mask globs overlap: a mask is not a scene
        rel = img.relative_to(src)
        key = _pair_key(rel)
        if key in seen:
            raise DataError(f"{img}: same scene name as {seen[key]}; rename one (pairing uses '{key}')")
        seen[key] = img
        mask = mask_by_key.get(key)
        scenes.append(_Scene(key, img, mask, rel.as_posix(), mask and mask.relative_to(src).as_posix()))
    return scenes


def _assign(scenes: list[_Scene], split: dict[str, list[str]], where: str) -> dict[str, list[_Scene]]:
    out: dict[str, list[_Scene]] = {name: [] for name in split}
    for scene in scenes:
        hits = [
            n for n, globs in split.items()
            if any(scene.rel == g or fnmatch.fnmatchcase(scene.rel, g) for g in globs)
        ]  # fmt: skip
        if len(hits) > 1:
            raise DataError(f"{scene.image}: matches splits {hits} in {where}; a scene belongs to one split")
        if hits:
            out[hits[0]].append(scene)
    empty = [n for n, s in out.items() if not s]
    if empty:
        raise DataError(f"{where}: no scene matches split(s) {empty}; scene paths look like '{scenes[0].rel}'")
    return out


def _safe_id(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key.replace("/", "__"))


# --------------------------------------------------------------------------- header checks and bad pairs


def _band_names(src, path: Path, override: list[str] | None) -> tuple[list[str], int | None]:
    """(band names, 1-based alpha band or None). Names from colour interpretation or descriptions."""
    interp = list(src.colorinterp)
    alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
    keep = [i for i in range(src.count) if i + 1 != alpha]
    if override is not None:
        if len(override) != len(keep):
            raise DataError(
                f"{path}: has {len(keep)} bands but --bands (bands=) names {len(override)}: {', '.join(override)}"
            )
        return list(override), alpha
    named = {
        ColorInterp.red: "red",
        ColorInterp.green: "green",
        ColorInterp.blue: "blue",
        ColorInterp.gray: "gray",
    }
    names = []
    for i in keep:
        desc = src.descriptions[i]
        names.append(desc or named.get(interp[i]) or f"band{i + 1}")
    if len(set(names)) != len(names):
        names = [f"band{i + 1}" for i in keep]
    return names, alpha


@dataclass
class _BadPair:
    scene: _Scene
    split: str
    reason: str

    def record(self) -> dict[str, Any]:
        """What ``dataset.yaml`` (``import.skipped_pairs``) and :class:`BadPairs` say about it."""
        return {"image": self.scene.rel, "mask": self.scene.mask_rel, "split": self.split, "reason": self.reason}


class BadPairs(DataError):
    """Some image/mask pairs cannot be imported; ``pairs`` has one record per pair (image, mask,
    split, reason), every one found, not just the first."""

    def __init__(self, message: str, pairs: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.pairs = pairs

    def __reduce__(self):
        return (type(self), (str(self), self.pairs))

    @classmethod
    def of(cls, bad: list[_BadPair], total: int) -> BadPairs:
        bad = sorted(bad, key=lambda b: b.scene.rel)
        listed = "\n".join(f"  - {b.reason}" for b in bad)
        if len(bad) < total:
            advice = (
                "Fix them, or pass --skip-bad (skip_bad=True) to import the rest; what is skipped, and why, "
                "is recorded in dataset.yaml (import.skipped_pairs)."
            )
        else:
            advice = "Every pair is bad, so --skip-bad would leave nothing: fix the files or the options."
        return cls(
            f"{len(bad)} of {total} image/mask pairs cannot be imported:\n{listed}\n{advice}",
            [b.record() for b in bad],
        )


def _pair_bands(
    scene: _Scene, table: ClassTable, bands: list[str] | None, ignore_index: int, mask_glob: str
) -> list[str]:
    """Band names of one pair, from its headers only (no pixels); DataError for a pair that can't work."""
    if scene.mask is None:
        raise DataError(
            f"{scene.image}: no mask found; expected a file matching {mask_glob!r} whose path without "
            f"the images/masks folder and suffix is '{scene.key}'"
        )
    with open_raster(scene.image) as img, open_raster(scene.mask) as msk:
        names, _ = _band_names(img, scene.image, bands)
        if (img.width, img.height) != (msk.width, msk.height):
            raise DataError(
                f"{scene.mask}: mask is {msk.width}x{msk.height} px but its image {scene.image} "
                f"is {img.width}x{img.height}; they must have the same size"
            )
        _MaskDecoder(msk, scene.mask, table, ignore_index)  # mask band count, colours vs table
    return names


def _check_pairs(
    by_split: dict[str, list[_Scene]], table: ClassTable, bands: list[str] | None, ignore_index: int, mask_glob: str
) -> tuple[list[_BadPair], list[str]]:
    """(bad pairs, the dataset's band names), from every pair's headers, before anything is cut.

    Images whose band names differ but whose band counts agree are not bad pairs: that is the usual
    state of per-file band descriptions, and ``bands`` names them. An image with another band count
    than most is a bad pair.
    """
    bad: list[_BadPair] = []
    groups: dict[tuple[str, ...], list[_Scene]] = {}
    ids: dict[str, _Scene] = {}
    for split, scenes in by_split.items():
        for scene in scenes:
            other = ids.setdefault(_safe_id(scene.key), scene)
            if other is not scene:
                raise DataError(
                    f"{scene.image} and {other.image} would write chips of the same name "
                    f"'{_safe_id(scene.key)}_r.._c..'; rename one"
                )
            try:
                names = _pair_bands(scene, table, bands, ignore_index, mask_glob)
            except DataError as exc:
                bad.append(_BadPair(scene, split, str(exc)))
                continue
            groups.setdefault(tuple(names), []).append(scene)
    if not groups:
        raise BadPairs.of(bad, len(bad))  # not one good pair: nothing to compare band names with
    common = max(groups, key=lambda k: len(groups[k]))
    renamed = [k for k in groups if k != common and len(k) == len(common)]
    if renamed:
        listed = "; ".join(
            f"{', '.join(k)} in {groups[k][0].rel}" + (f" and {len(groups[k]) - 1} more" if len(groups[k]) > 1 else "")
            for k in [common, *renamed]
        )
        raise DataError(
            f"band names differ between the images ({listed}); name the bands, in the files' order, with "
            f"--bands {','.join(common)} (bands=[...] in Python)"
        )
    for k, scenes in groups.items():
        if k != common:
            for scene in scenes:
                reason = (
                    f"{scene.image}: has {len(k)} bands ({', '.join(k)}) but {len(groups[common])} other "
                    f"images have {len(common)} ({', '.join(common)})"
                )
                split = next(s for s, members in by_split.items() if scene in members)
                bad.append(_BadPair(scene, split, reason))
    return bad, list(common)
