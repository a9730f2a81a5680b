"""Co-registered multi-sensor imagery: a generator of a demo set and a reader for real stacks.

The generator renders one underlying scene (a class map with texture) as three sensors that differ
as real ones do: ground sample distance (1, 2 and 4 m), spectral response (four bands each, centred
on slightly different wavelengths with different widths), gain, noise, and a small misregistration
(sub-pixel to a couple of pixels). Each sensor is written at its own resolution as one GeoTIFF
covering the whole grid of chips; the reader brings every sensor onto the finest grid with
rasterio's warp, exactly as it does for real stacks. ``labels.tif`` holds the scene's class map,
``multisensor.json`` the sensors, their band names and the chips with their dominant class (the
k-NN label).

``texture`` picks the scene's spatial structure: ``"uniform"`` (one brightness texture shared by
every class, the first generator) or ``"class"`` (each class its own pattern as well as its own
spectrum: calm water, a fine canopy, soil ripples, roofs split by streets, parcels of crop rows).
``acquisition`` gives every sensor's pass its own illumination and haze. The defaults (``"class"``,
1.0) are the realistic scene: with the first generator (``"uniform"``, 0) a chip's mean colour gave
its label away in every sensor alike, and CSF had nothing to learn that random features lacked
(``bench/results/history/csf-diagnosis-2026-11-26.json``); on the default scene CSF beats random init on every k-NN
column (``bench/results/history/csf-gpu-multisensor-2026-11-26.json``, a GPU run of older code).
The generator needs numpy alone (no scipy), and holds the scene as a few (H, W) fields, never a
per-pixel spectrum, so it renders many chips cheaply.

A real stack is one GeoTIFF per sensor: on the same grid (read as is) or on different grids in
any CRS (warped onto the finest one, bilinear). Band names come per sensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from search_spaces.errors import DataError, SpecError

__all__ = [
    "CLASSES",
    "TEXTURES",
    "SENSORS",
    "SensorSpec",
    "write_multisensor_dataset",
    "MultiSensorStack",
    "open_multisensor",
]

CLASSES = ["water", "vegetation", "bare_soil", "built_up", "cropland"]

_WAVELENGTHS = np.arange(420.0, 921.0, 10.0)


def _spectrum(points: Sequence[tuple[float, float]]) -> np.ndarray:
    xs, ys = zip(*points, strict=True)
    return np.interp(_WAVELENGTHS, xs, ys)


# Reflectance (0..1) of each class over wavelength (nm): shapes as in spectral libraries, simplified.
_CLASS_SPECTRA = np.stack([
    _spectrum([(420, 0.08), (500, 0.07), (560, 0.06), (660, 0.03), (760, 0.01), (920, 0.005)]),
    _spectrum([(420, 0.03), (500, 0.05), (550, 0.10), (650, 0.04), (700, 0.12), (740, 0.40), (920, 0.45)]),
    _spectrum([(420, 0.12), (500, 0.17), (600, 0.24), (700, 0.29), (800, 0.32), (920, 0.34)]),
    _spectrum([(420, 0.20), (500, 0.21), (600, 0.22), (700, 0.23), (800, 0.24), (920, 0.24)]),
    _spectrum([(420, 0.05), (500, 0.07), (550, 0.13), (650, 0.09), (700, 0.16), (740, 0.30), (920, 0.33)]),
])


@dataclass(frozen=True)
class SensorSpec:
    """One simulated sensor: resolution, band centres/widths (nm), gain, noise and misregistration."""

    name: str
    gsd: int
    centers: tuple[float, float, float, float]
    widths: tuple[float, float, float, float]
    gain: float
    noise: float
    shift: tuple[float, float]  # (rows, cols) in finest-grid pixels

    @property
    def band_names(self) -> list[str]:
        return [f"{self.name}_{b}" for b in ("blue", "green", "red", "nir")]

    def responses(self) -> np.ndarray:
        """Normalised Gaussian spectral response of each band over the wavelength grid (4, W)."""
        r = np.exp(-0.5 * ((_WAVELENGTHS[None] - np.array(self.centers)[:, None])
                           / np.array(self.widths)[:, None]) ** 2)
        return r / r.sum(axis=1, keepdims=True)


SENSORS = (
    SensorSpec("aerial", 1, (470, 550, 660, 840), (20, 20, 20, 30), 1.00, 0.010, (0.0, 0.0)),
    SensorSpec("smallsat", 2, (485, 565, 650, 860), (35, 35, 30, 50), 0.90, 0.020, (0.7, -0.4)),
    SensorSpec("landsat", 4, (480, 560, 655, 865), (30, 30, 20, 25), 1.10, 0.008, (-1.5, 1.2)),
)


def _gaussian_wrap(field: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """1-D Gaussian filter along ``axis`` with periodic edges (kernel cut at 4 σ), by FFT.

    The same filter as ``scipy.ndimage.gaussian_filter1d(mode="wrap")``, in numpy alone, so the
    generator runs wherever torch does (a GPU box with no scipy) and costs n log n for wide kernels.
    """
    n = field.shape[axis]
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel = np.zeros(n)
    np.add.at(kernel, taps % n, weights / weights.sum())
    shape = [1] * field.ndim
    shape[axis] = n // 2 + 1
    spectrum = np.fft.rfft(field, axis=axis) * np.fft.rfft(kernel).reshape(shape)
    return np.fft.irfft(spectrum, n=n, axis=axis)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = rng.standard_normal(shape)
    field = _gaussian_wrap(_gaussian_wrap(field, sigma, 0), sigma, 1)
    return (field - field.mean()) / (field.std() + 1e-12)


def _shift_linear(band: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``band`` moved by ``shift`` (rows, cols) px, bilinear, edges repeated: a sensor's misregistration."""
    out = band
    for axis, d in enumerate(shift):
        n = band.shape[axis]
        coords = np.clip(np.arange(n) - d, 0, n - 1)
        lo = np.floor(coords).astype(np.intp)
        hi = np.minimum(lo + 1, n - 1)
        frac = (coords - lo).reshape((-1, 1) if axis == 0 else (1, -1))
        out = (1 - frac) * np.take(out, lo, axis=axis) + frac * np.take(out, hi, axis=axis)
    return out


TEXTURES = ("class", "uniform")


def _blocks(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Cell index map of a grid of ``cell``-px blocks with a random offset: (H, W) int."""
    h, w = shape
    dy, dx = rng.integers(0, cell, 2)
    rows = (np.arange(h) + dy) // cell
    cols = (np.arange(w) + dx) // cell
    return rows[:, None] * (cols.max() + 1) + cols[None, :]


def _class_textures(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Per-class brightness patterns (n_classes, H, W), each about 1, as land cover looks from above.

    Water is calm; vegetation is a fine canopy of crowns; bare soil has broad ripples; built-up
    land is a grid of roofs of different brightness split by dark streets; cropland is parcels of
    rows, each parcel with its own row direction. Without this the classes differ only in their
    spectra and every class shares one texture: see the module note.
    """
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    water = 1.0 + 0.02 * _smooth_field(rng, shape, 4.0)
    canopy = 1.0 + 0.25 * _smooth_field(rng, shape, 1.0)
    soil = 1.0 + 0.10 * _smooth_field(rng, shape, 3.0)
    roofs = _blocks(rng, shape, 8)
    roof_tone = 1.0 + 0.25 * rng.standard_normal(int(roofs.max()) + 1)
    streets = ((yy.astype(int) + 3) % 8 < 2) | ((xx.astype(int) + 5) % 8 < 2)
    built = np.where(streets, 0.55, roof_tone[roofs])
    parcels = _blocks(rng, shape, 24)
    angle = rng.choice(np.deg2rad([0.0, 45.0, 90.0, 135.0]), int(parcels.max()) + 1)[parcels]
    rows = 1.0 + 0.2 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / 4.0)
    return np.stack([water, canopy, soil, built, rows]).astype(np.float32)


@dataclass(frozen=True)
class _Scene:
    """One synthetic place: class map, blend towards the next class's spectrum, brightness (H, W)."""

    classes: np.ndarray
    blend: np.ndarray
    brightness: np.ndarray


def _render_scene(rng: np.random.Generator, height: int, width: int, size: int, texture: str,
                  texture_rng: np.random.Generator) -> _Scene:
    """Class map and the per-pixel fields every sensor observes (a pixel's spectrum is implied)."""
    n = len(CLASSES)
    # Class blobs about a chip across, with finer variation so most chips mix classes.
    fields = np.stack([
        _smooth_field(rng, (height, width), size * 0.45)
        + 0.35 * _smooth_field(rng, (height, width), size / 8)
        for _ in range(n)
    ])
    classes = fields.argmax(axis=0).astype(np.uint8)
    del fields
    generic = 0.15 if texture == "uniform" else 0.05
    brightness = 1.0 + generic * _smooth_field(rng, (height, width), 1.5)
    # Within-class spectral variation: blend towards a neighbouring class's spectrum a little.
    blend = np.clip(0.15 + 0.1 * _smooth_field(rng, (height, width), size / 4), 0.0, 0.4)
    if texture == "class":
        patterns = _class_textures(texture_rng, (height, width))
        brightness = brightness * np.take_along_axis(patterns, classes[None].astype(np.intp), axis=0)[0]
    return _Scene(classes, blend.astype(np.float32), brightness.astype(np.float32))


def _observe(sensor: SensorSpec, scene: _Scene, rng: np.random.Generator, acquisition: float = 0.0,
             size: int = 64) -> np.ndarray:
    """What ``sensor`` records of the scene, at its own resolution (4, H/gsd, W/gsd).

    A pixel's spectrum is ``brightness × ((1 − blend) · class spectrum + blend · next class's)``, so
    each band is the same mix of the band's response to the class spectra (a 4 × classes table):
    no per-pixel spectrum is ever held, and memory grows with the bands, not the wavelengths.

    ``acquisition`` > 0 gives this sensor's pass its own conditions (see :func:`_conditions`).
    """
    table = (sensor.responses() @ _CLASS_SPECTRA.T).astype(np.float32) * sensor.gain  # (4, classes)
    nxt = (scene.classes + 1) % len(CLASSES)
    bands = scene.brightness * ((1 - scene.blend) * table[:, scene.classes] + scene.blend * table[:, nxt])
    if acquisition > 0:
        bands = _conditions(rng, bands, acquisition, size)
    if sensor.shift != (0.0, 0.0):
        bands = np.stack([_shift_linear(b, sensor.shift) for b in bands])
    g = sensor.gsd
    _, h, w = bands.shape
    coarse = bands.reshape(4, h // g, g, w // g, g).mean(axis=(2, 4))
    coarse += rng.normal(0.0, sensor.noise, coarse.shape)
    return np.clip(coarse, 0.0, None).astype(np.float32)


def _conditions(rng: np.random.Generator, bands: np.ndarray, strength: float, size: int) -> np.ndarray:
    """One pass's illumination and haze over the scene, different for every sensor (``bands``: 4, H, W).

    Sensors image a place on different days: sun, terrain shading and haze change between passes,
    over distances of a few chips. Illumination multiplies every band (more in the visible than the
    NIR); haze adds path radiance that is strongest in the blue. Without this, a chip's mean colour
    gives away its class in every sensor alike (and a colour histogram is as good as any encoder);
    with it, what the sensors agree on is the ground, which is what fusing them should learn.
    """
    shape = bands.shape[1:]
    illumination = _smooth_field(rng, shape, size * 1.5)
    haze = np.clip(1.0 + _smooth_field(rng, shape, size * 2.0), 0.0, None)
    tilt = np.array([1.2, 1.0, 0.9, 0.7], dtype=np.float32)  # illumination acts less in the NIR
    path = np.array([0.06, 0.04, 0.025, 0.01], dtype=np.float32)  # Rayleigh-like: the blue most
    out = bands * np.exp(strength * 0.5 * tilt[:, None, None] * illumination[None])
    return (out + strength * path[:, None, None] * haze[None]).astype(np.float32)


def write_multisensor_dataset(
    out_dir: str | Path, *, n_chips: int = 400, size: int = 64, seed: int = 0,
    crs: str = "EPSG:32640", origin: tuple[float, float] = (300000.0, 2800000.0), texture: str = "class",
    acquisition: float = 1.0,
) -> Path:
    """Write a generated co-registered 3-sensor, 12-band set of ``n_chips`` chips of ``size`` px.

    Layout: ``{sensor}.tif`` per sensor (native resolution, float32 reflectance, nodata -1),
    ``labels.tif`` (uint8 class map on the finest grid) and ``multisensor.json``. Returns ``out_dir``.
    ``texture``: ``"class"`` (each class its own spatial pattern) or ``"uniform"`` (one texture for
    every class, the first generator's scene, kept to reproduce its measurements). ``acquisition``:
    strength of each sensor's own illumination and haze (0 = none, the first generator; 1 = light
    changing by about ±50 % between passes, haze up to a fifth of bright ground's blue).
    """
    if texture not in TEXTURES:
        raise SpecError(f"texture must be one of {TEXTURES}, got {texture!r}", field="texture")
    if n_chips < 1:
        raise SpecError(f"n_chips must be >= 1, got {n_chips}", field="n_chips")
    if not 0.0 <= acquisition <= 3.0:
        raise SpecError(f"acquisition must be in [0, 3], got {acquisition}", field="acquisition")
    coarsest = max(s.gsd for s in SENSORS)
    if size < 16 or size % coarsest:
        raise SpecError(f"size must be a multiple of {coarsest} and >= 16, got {size}", field="size")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cols = math.ceil(math.sqrt(n_chips))
    rows = math.ceil(n_chips / cols)
    height, width = rows * size, cols * size
    scene = _render_scene(rng, height, width, size, texture, np.random.default_rng([seed, 1]))
    classes = scene.classes

    sensors = {}
    for sensor in SENSORS:
        data = _observe(sensor, scene, rng, acquisition, size)
        profile = dict(
            driver="GTiff", dtype="float32", count=4, height=data.shape[1], width=data.shape[2],
            crs=CRS.from_string(crs), transform=from_origin(origin[0], origin[1], sensor.gsd, sensor.gsd),
            nodata=-1.0, tiled=True, blockxsize=64, blockysize=64, compress="deflate",
        )
        with rasterio.open(out / f"{sensor.name}.tif", "w", **profile) as dst:
            dst.write(data)
            dst.descriptions = tuple(sensor.band_names)
        sensors[sensor.name] = {"file": f"{sensor.name}.tif", "bands": sensor.band_names, "gsd": sensor.gsd}

    label_profile = dict(
        driver="GTiff", dtype="uint8", count=1, height=height, width=width, crs=CRS.from_string(crs),
        transform=from_origin(origin[0], origin[1], 1, 1), nodata=255,
    )
    with rasterio.open(out / "labels.tif", "w", **label_profile) as dst:
        dst.write(classes[None])

    chips = []
    for i in range(n_chips):
        r, c = divmod(i, cols)
        block = classes[r * size:(r + 1) * size, c * size:(c + 1) * size]
        shares = np.bincount(block.ravel(), minlength=len(CLASSES)) / block.size
        chips.append({"id": i, "row": r * size, "col": c * size, "label": int(shares.argmax()),
                      "shares": [round(float(s), 4) for s in shares]})
    manifest = {"size": size, "classes": CLASSES, "sensors": sensors, "chips": chips, "seed": seed,
                "texture": texture, "acquisition": acquisition}
    tmp = out / ".multisensor.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / "multisensor.json")
    return out


class MultiSensorStack:
    """Several sensors' GeoTIFFs read as one band stack on the finest sensor's grid.

    ``sensors`` maps a sensor name to its file; ``band_names`` (optional) maps it to its bands'
    names (default: the file's band descriptions, else ``{sensor}_b{i}``). Sensors on the finest
    grid are read directly; the others through a ``WarpedVRT`` onto that grid (bilinear), so a
    window read never loads a whole scene.
    """

    def __init__(self, sensors: Mapping[str, str | Path],
                 band_names: Mapping[str, Sequence[str]] | None = None) -> None:
        if not sensors:
            raise SpecError("a multi-sensor stack needs at least one sensor file", field="sensors")
        self._sources = {}
        for name, path in sensors.items():
            if not Path(path).is_file():
                raise DataError(f"sensor {name!r}: file {path} not found")
            self._sources[name] = rasterio.open(path)
        finest = min(self._sources.values(), key=lambda s: abs(s.res[0] * s.res[1]))
        self.crs, self.transform = finest.crs, finest.transform
        self.height, self.width = finest.height, finest.width
        self.sensors: dict[str, list[str]] = {}
        self._readers = {}
        for name, src in self._sources.items():
            if src.crs is None:
                raise DataError(f"sensor {name!r} ({src.name}) has no CRS; cannot co-register it")
            names = list((band_names or {}).get(name) or [])
            if not names:
                names = [d or f"{name}_b{i + 1}" for i, d in enumerate(src.descriptions)]
            if len(names) != src.count:
                raise DataError(f"sensor {name!r} has {src.count} bands but {len(names)} band names were "
                                f"given: {names}")
            self.sensors[name] = names
            same = (src.crs == self.crs and src.transform == self.transform
                    and (src.height, src.width) == (self.height, self.width))
            self._readers[name] = src if same else WarpedVRT(
                src, crs=self.crs, transform=self.transform, width=self.width, height=self.height,
                resampling=Resampling.bilinear,
            )

    @property
    def band_names(self) -> list[str]:
        return [b for names in self.sensors.values() for b in names]

    def read(self, window: Window) -> np.ndarray:
        """All sensors' bands in the window, on the finest grid: (C, h, w) float32."""
        parts = [r.read(window=window, out_dtype="float32") for r in self._readers.values()]
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        for src in self._sources.values():
            if not src.closed:
                src.close()

    def __enter__(self) -> MultiSensorStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_multisensor(root: str | Path) -> tuple[MultiSensorStack, dict]:
    """Open a folder written by :func:`write_multisensor_dataset` (or laid out the same way)."""
    root = Path(root)
    manifest_path = root / "multisensor.json"
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path} not found; write one with `geonas data demo-multisensor {root}` "
                        "or list the sensor files yourself")
    manifest = json.loads(manifest_path.read_text())
    files = {name: root / s["file"] for name, s in manifest["sensors"].items()}
    bands = {name: s["bands"] for name, s in manifest["sensors"].items()}
    return MultiSensorStack(files, bands), manifest
