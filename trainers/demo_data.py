"""A synthetic but honest building-segmentation dataset, written as real GeoTIFFs.

Why synthetic: the demo and the tests must run anywhere without a download, and still exercise the
real path (CRS, geotransform, nodata, any number of bands). Why not trivial: a search is only
meaningful when a model that learns beats one that doesn't, and shape must matter, not just colour.
So roofs come in several spectra, some close to bare soil or to concrete roads; buildings are
rectangles and L-shapes of varied size and orientation that cast shadows; there are roads,
vegetation (high NIR), water, haze and brightness that vary across chips, and sensor noise. A
per-pixel linear classifier beats the majority class but stays far from perfect (see
``tests/test_demo_data.py``); a network that sees shapes can do better.

Scenes are generated with numpy at a few times the chip size and cut into windows; every split
comes from its own scenes, so no scene leaks across splits. Reflectance is stored as uint16
(x10,000, like Sentinel-2 L2A) with nodata 0 in a UTM zone 40N grid at 1 m GSD.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import Affine
from scipy.ndimage import gaussian_filter

from search_spaces.errors import DataError, SpecError
from trainers._raster import publish_dir, write_chip
from trainers.datasets import DatasetInfo, band_stats

__all__ = [
    "BAND_WAVELENGTHS",
    "DEFAULT_CHIPS",
    "demo_band_names",
    "write_demo_dataset",
]

#: Sentinel-2's 13 bands by centre wavelength (nm), named so that selections like
#: ``["red", "green", "blue"]`` mean the same thing in a 3-, 4- or 13-band demo set.
BAND_WAVELENGTHS: dict[str, float] = {
    "coastal": 443,
    "blue": 490,
    "green": 560,
    "red": 665,
    "rededge1": 705,
    "rededge2": 740,
    "rededge3": 783,
    "nir": 842,
    "nir_narrow": 865,
    "water_vapour": 945,
    "cirrus": 1375,
    "swir1": 1610,
    "swir2": 2190,
}
# Which bands a sensor with n < 13 bands would most likely carry, best first.
_PREFERENCE = ["blue", "green", "red", "nir", "swir1", "swir2", "rededge1", "rededge2", "rededge3",
               "nir_narrow", "coastal", "water_vapour", "cirrus"]  # fmt: skip

DEFAULT_CHIPS: dict[str, int] = {"train": 240, "val": 64, "test": 64}
_CLASSES = ["background", "building"]
_CRS = CRS.from_epsg(32640)  # WGS 84 / UTM zone 40N (Dubai)
_GSD = 1.0  # metres per pixel
_NODATA = 0
_SCENE_CHIPS = 4  # a scene is 4x4 chips

# Reflectance (0..1) of each material at anchor wavelengths; interpolated to each band's centre.
_ANCHORS = np.array([400, 500, 600, 700, 750, 900, 1300, 1600, 2200], np.float64)
_MATERIALS: dict[str, list[float]] = {
    "soil": [0.14, 0.19, 0.27, 0.32, 0.34, 0.37, 0.42, 0.45, 0.40],
    "vegetation": [0.03, 0.05, 0.10, 0.05, 0.30, 0.45, 0.40, 0.25, 0.12],
    "water": [0.08, 0.07, 0.05, 0.02, 0.012, 0.006, 0.003, 0.002, 0.001],
    "asphalt": [0.06, 0.07, 0.08, 0.09, 0.09, 0.10, 0.11, 0.12, 0.12],
    "concrete": [0.20, 0.24, 0.27, 0.29, 0.30, 0.31, 0.32, 0.33, 0.30],
    # roofs
    "tile": [0.07, 0.08, 0.12, 0.30, 0.33, 0.36, 0.40, 0.43, 0.40],
    "metal": [0.42, 0.47, 0.50, 0.51, 0.51, 0.50, 0.48, 0.46, 0.42],
    "dark": [0.07, 0.08, 0.09, 0.10, 0.11, 0.12, 0.13, 0.14, 0.14],
    "roof_concrete": [0.21, 0.25, 0.28, 0.30, 0.31, 0.32, 0.33, 0.33, 0.31],
    "roof_sand": [0.15, 0.20, 0.27, 0.31, 0.33, 0.36, 0.41, 0.44, 0.40],
}
_ROOFS = ["tile", "metal", "dark", "roof_concrete", "roof_sand"]
_ROOF_P = [0.3, 0.25, 0.1, 0.15, 0.2]
_GROUND = ["soil", "vegetation", "water", "asphalt", "concrete"]


def demo_band_names(bands: int | list[str]) -> list[str]:
    """Band names for a demo set: 3 -> red, green, blue; 4..13 -> Sentinel-2-like, by wavelength.

    More than 13 bands adds hyperspectral-style bands named by wavelength (``hs1000nm``).
    """
    if isinstance(bands, list):
        unknown = [b for b in bands if b not in BAND_WAVELENGTHS and not _hs_wavelength(b)]
        if unknown or not bands or len(set(bands)) != len(bands):
            raise SpecError(
                f"demo bands must be distinct names from: {', '.join(BAND_WAVELENGTHS)} "
                f"(or 'hs<nm>nm'); got {bands}",
                field="bands",
            )
        return list(bands)
    if not isinstance(bands, int) or bands < 3:
        raise SpecError(f"demo data needs at least 3 bands, got {bands!r}", field="bands")
    if bands == 3:
        return ["red", "green", "blue"]
    if bands <= len(BAND_WAVELENGTHS):
        chosen = _PREFERENCE[:bands]
        return sorted(chosen, key=BAND_WAVELENGTHS.__getitem__)
    extra = np.linspace(420, 2350, bands - len(BAND_WAVELENGTHS) + 2)[1:-1]
    names = list(BAND_WAVELENGTHS) + [f"hs{int(w)}nm" for w in extra]
    return sorted(names, key=_wavelength)


def _hs_wavelength(name: str) -> float | None:
    if name.startswith("hs") and name.endswith("nm") and name[2:-2].isdigit():
        return float(name[2:-2])
    return None


def _wavelength(name: str) -> float:
    return BAND_WAVELENGTHS.get(name) or _hs_wavelength(name) or 0.0


@dataclass
class _Spectra:
    """Per-band tables for one band list: material reflectances and atmospheric terms."""

    materials: dict[str, np.ndarray]  # name -> [B]
    transmission: np.ndarray  # [B]
    haze: np.ndarray  # [B], relative path radiance (stronger in the blue)

    @classmethod
    def for_bands(cls, names: list[str]) -> _Spectra:
        wl = np.array([_wavelength(n) for n in names])
        materials = {m: np.interp(wl, _ANCHORS, v) for m, v in _MATERIALS.items()}
        # Water-vapour and cirrus bands see little of the ground: absorbed by the atmosphere.
        transmission = (
            1.0 - 0.45 * np.exp(-(((wl - 945) / 40) ** 2)) - 0.97 * np.exp(-(((wl - 1375) / 60) ** 2))
        )
        haze = (490.0 / wl) ** 2
        return cls(materials, transmission, haze)


def _smooth(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-9)


def _scene(rng: np.random.Generator, size: int, spectra: _Spectra, nodata_edge: bool):
    """One scene: (reflectance [B, S, S] float32, building mask uint8 [S, S], nodata bool [S, S])."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    material = np.zeros((size, size), np.int16)  # index into `rows`
    rows: list[np.ndarray] = [spectra.materials[m] for m in _GROUND]
    soil, veg, water, asphalt, concrete = range(5)
    brightness = 1.0 + 0.08 * _smooth(rng, size, size / 10) + 0.05 * _smooth(rng, size, 1.0)

    v = _smooth(rng, size, size / 14)
    material[v > np.quantile(v, 1 - rng.uniform(0.05, 0.3))] = veg
    is_water = np.zeros((size, size), bool)
    if rng.random() < 0.4:  # a creek or pond in some scenes
        w = _smooth(rng, size, size / 6) + 1.5 * (xx / size if rng.random() < 0.5 else yy / size)
        is_water = w > np.quantile(w, 1 - rng.uniform(0.05, 0.2))
        material[is_water] = water

    blocked = is_water.copy()
    road_angles = rng.uniform(0, np.pi, size=int(rng.integers(1, 4)))
    for angle in road_angles:
        x0, y0 = rng.uniform(0, size, 2)
        dist = np.abs((xx - x0) * np.sin(angle) - (yy - y0) * np.cos(angle))
        road = (dist < rng.uniform(1.5, 4.0)) & ~is_water
        material[road] = concrete if rng.random() < 0.3 else asphalt
        blocked |= dist < 6
    brightness[material == veg] *= 1.0 + 0.15 * _smooth(rng, size, 0.8)[material == veg]

    building = np.zeros((size, size), bool)
    shadow = np.zeros((size, size), bool)
    sun = rng.uniform(0, 2 * np.pi)
    sun_dx, sun_dy = np.cos(sun), np.sin(sun)
    target = size * size * rng.uniform(0.08, 0.25)
    for _ in range(400):
        if building.sum() >= target:
            break
        a, b = rng.uniform(3, 12), rng.uniform(3, 9)
        cx, cy = rng.uniform(0, size, 2)
        # Most buildings line up with a road (planned blocks); some don't.
        theta = rng.choice(road_angles) if rng.random() < 0.6 else rng.uniform(0, np.pi)
        r = int(np.ceil(np.hypot(a, b))) + 1
        y_lo, y_hi = max(int(cy) - r, 0), min(int(cy) + r + 1, size)
        x_lo, x_hi = max(int(cx) - r, 0), min(int(cx) + r + 1, size)
        if y_hi <= y_lo or x_hi <= x_lo:
            continue
        dx, dy = xx[y_lo:y_hi, x_lo:x_hi] - cx, yy[y_lo:y_hi, x_lo:x_hi] - cy
        u = dx * np.cos(theta) + dy * np.sin(theta)
        w = -dx * np.sin(theta) + dy * np.cos(theta)
        foot = (np.abs(u) < a) & (np.abs(w) < b)
        if rng.random() < 0.35:  # L-shape: cut one corner away
            foot &= ~((u > a * rng.uniform(-0.3, 0.3)) & (w > b * rng.uniform(-0.3, 0.3)))
        if foot.sum() < 12:
            continue
        win = (slice(y_lo, y_hi), slice(x_lo, x_hi))
        if (foot & (blocked[win] | building[win])).any():
            continue
        roof = _ROOFS[rng.choice(len(_ROOFS), p=_ROOF_P)]
        spectrum = spectra.materials[roof] * rng.uniform(0.85, 1.15) * rng.normal(1, 0.03, len(spectra.haze))
        rows.append(spectrum)
        material[win][foot] = len(rows) - 1
        if roof in ("tile", "metal"):  # gable roof: the two slopes catch the sun differently
            brightness[win][foot & (w > 0)] *= 1.12
            brightness[win][foot & (w <= 0)] *= 0.9
        building[win] |= foot
        fy, fx = np.nonzero(foot)
        fy, fx = fy + y_lo, fx + x_lo
        for t in range(1, int(rng.uniform(2, 9)) + 1):  # cast shadow, away from the sun
            sy, sx = (
                np.clip(fy - round(t * sun_dy), 0, size - 1),
                np.clip(fx - round(t * sun_dx), 0, size - 1),
            )
            shadow[sy, sx] = True
        grown = np.zeros_like(foot)
        grown[1:, :] |= foot[:-1, :]
        grown[:-1, :] |= foot[1:, :]
        grown[:, 1:] |= foot[:, :-1]
        grown[:, :-1] |= foot[:, 1:]
        blocked[win] |= grown | foot
    shadow &= ~building
    brightness[shadow] *= rng.uniform(0.3, 0.5)

    table = np.stack(rows).astype(np.float32)  # [M, B]
    refl = table[material] * brightness[..., None]  # [S, S, B]
    haze_level = rng.uniform(0.0, 0.06) + 0.02 * _smooth(rng, size, size / 4)
    refl = refl + haze_level[..., None] * spectra.haze
    refl = refl * spectra.transmission
    refl = refl + rng.normal(0, 1, refl.shape) * (0.006 + 0.03 * refl)
    refl = np.moveaxis(refl, -1, 0).astype(np.float32)

    nodata = np.zeros((size, size), bool)
    if nodata_edge:  # the edge of a sensor swath, slanted across the left of the scene
        edge = rng.uniform(0.03, 0.12) * size + rng.uniform(-0.1, 0.1) * yy
        nodata = xx < edge
    return refl, building.astype(np.uint8), nodata


def _write_chips(tmp: Path, chips: dict[str, int], size: int, names: list[str], seed: int) -> dict[str, Any]:
    """Generate scenes split by split and write their chips under ``tmp``; returns pixel counts."""
    spectra = _Spectra.for_bands(names)
    rng = np.random.default_rng(seed)
    scene_px = size * _SCENE_CHIPS
    scene_no = 0
    counts: dict[str, dict[str, int]] = {}
    for split, wanted in chips.items():
        written, nodata_px, building_px, labelled = 0, 0, 0, 0
        while written < wanted:
            refl, mask, nodata = _scene(rng, scene_px, spectra, nodata_edge=scene_no % 4 == 0)
            scene_gain = rng.uniform(0.85, 1.15)
            east, north = 380_000 + 3_000 * (scene_no % 20), 2_800_000 - 3_000 * (scene_no // 20)
            for r in range(_SCENE_CHIPS):
                for c in range(_SCENE_CHIPS):
                    if written == wanted:
                        break
                    win = (slice(r * size, (r + 1) * size), slice(c * size, (c + 1) * size))
                    gain = scene_gain * rng.uniform(0.93, 1.07)  # per-chip brightness, like a mosaic
                    dn = np.clip(np.rint(refl[:, win[0], win[1]] * gain * 10_000), 1, 65_535).astype(
                        np.uint16
                    )
                    m = mask[win].copy()
                    bad = nodata[win]
                    dn[:, bad] = _NODATA
                    m[bad] = 255
                    transform = Affine(_GSD, 0.0, east + c * size * _GSD, 0.0, -_GSD, north - r * size * _GSD)
                    chip_id = f"s{scene_no:03d}_r{r}c{c}"
                    geo = {"crs": _CRS, "transform": transform}
                    write_chip(
                        tmp / split / "images" / f"{chip_id}.tif", dn, nodata=_NODATA, band_names=names, **geo
                    )
                    write_chip(tmp / split / "masks" / f"{chip_id}.tif", m[None], nodata=None, **geo)
                    written += 1
                    nodata_px += int(bad.sum())
                    building_px += int((m == 1).sum())
                    labelled += int((m != 255).sum())
            scene_no += 1
        counts[split] = {
            "chips": written,
            "building_pixels": building_px,
            "labelled_pixels": labelled,
            "nodata_pixels": nodata_px,
        }
    return counts


def write_demo_dataset(
    out_dir: str | Path,
    *,
    chips: dict[str, int] | None = None,
    size: int = 64,
    bands: int | list[str] = 4,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a demo dataset (the project's format, real GeoTIFFs) into ``out_dir``; return it.

    ``chips`` maps split -> number of chips (default :data:`DEFAULT_CHIPS`, a few hundred);
    ``size`` is the chip edge in pixels; ``bands`` a count (>= 3) or a list of names from
    :data:`BAND_WAVELENGTHS`. The same arguments give the same bytes of data. The dataset is built
    in a temporary sibling folder and renamed into place, so a killed run leaves no half dataset.
    ``stats.json`` is written too. An existing non-empty ``out_dir`` is only replaced with
    ``overwrite=True`` and only when it is a dataset (has a dataset.yaml).
    """
    out = Path(out_dir).expanduser().resolve()
    chips = dict(DEFAULT_CHIPS if chips is None else chips)
    if not chips or "train" not in chips or any(not isinstance(n, int) or n < 1 for n in chips.values()):
        raise SpecError(
            f"chips must map split names (incl. 'train') to positive counts, got {chips}", "chips"
        )
    if not isinstance(size, int) or size < 8:
        raise SpecError(f"chip size must be an integer >= 8 px, got {size!r}", field="size")
    names = demo_band_names(bands)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: folder exists and is not empty; choose another or pass overwrite=True")
        if not (out / "dataset.yaml").is_file():
            raise DataError(f"{out}: not a dataset folder (no dataset.yaml); refusing to replace it")

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = _write_chips(tmp, chips, size, names, seed)
        info = DatasetInfo(
            name="geonas-demo",
            bands=tuple(names),
            classes=tuple(_CLASSES),
            root=tmp,
            ignore_index=255,
            splits={s: s for s in chips},
            source=f"synthetic scenes from geonas.trainers.demo_data (seed={seed}, chip={size}px, 1 m GSD, "
            "uint16 reflectance x10000, Sentinel-2-like band centres)",
            crs=_CRS.to_string(),
            extra={"nodata": _NODATA, "chip_size": size, "counts": counts},
        )
        info.write()
        band_stats(info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_dir(tmp, out, replace=overwrite)
