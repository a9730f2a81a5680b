"""Small rasterio helpers shared by the reader, the demo generator and the importer.

They exist so that the three agree on one thing each: how a chip is written (one GeoTIFF profile),
what counts as a nodata pixel, and how a file's problems turn into a :class:`DataError` that names it.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from search_spaces.errors import DataError

__all__ = ["open_raster", "nodata_pixels", "write_chip", "atomic_write_text", "publish_dir"]


@contextmanager
def open_raster(path: Path) -> Iterator[rasterio.io.DatasetReader]:
    """Open ``path`` for reading; a missing or corrupt file becomes a DataError naming it.

    Ungeoreferenced sources (plain JPEG/PNG) are legitimate inputs here, so GDAL's warning about them
    is silenced; callers check ``src.crs`` themselves.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioIOError as exc:
        raise DataError(f"{path}: not a readable raster ({exc}); re-export or remove the file") from exc
    try:
        yield src
    finally:
        src.close()


def nodata_pixels(image: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Boolean [H, W] of pixels where *every* band equals ``nodata`` (None when there are none).

    All bands, not any: a single dark band in a valid pixel (e.g. water in NIR) must not be dropped.
    NaN nodata is handled for float rasters.
    """
    if nodata is None:
        if np.issubdtype(image.dtype, np.floating):
            bad = np.isnan(image).all(axis=0)
            return bad if bad.any() else None
        return None
    bad = np.isnan(image).all(axis=0) if np.isnan(nodata) else (image == nodata).all(axis=0)
    return bad if bad.any() else None


def write_chip(
    path: Path,
    data: np.ndarray,
    *,
    crs: rasterio.crs.CRS | None,
    transform: rasterio.Affine,
    nodata: float | None,
    band_names: list[str] | None = None,
) -> None:
    """Write one chip as a compressed GeoTIFF ([C, H, W] array), via a temporary name and a rename.

    The rename keeps a killed writer from leaving a truncated chip that the reader would later
    reject; DEFLATE with a predictor keeps image chips small without changing a single value.
    """
    count, height, width = data.shape
    predictor = 3 if np.issubdtype(data.dtype, np.floating) else 2
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": predictor if count > 1 or data.dtype != np.uint8 else 1,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if band_names:
                dst.descriptions = tuple(band_names)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file so that readers see either the old or the new content, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish_dir(tmp: Path, out: Path, *, replace: bool) -> Path:
    """Move a finished dataset from its private build folder ``tmp`` to ``out``.

    Builders write into a per-process folder and publish with one rename, so readers never see a
    half-written dataset. When another process published the same dataset first (several trials
    preparing the demo set at once), its copy wins and ours is discarded. A dataset being replaced
    is renamed aside first and deleted only once the new one is in place, so a crash in between
    never leaves a half-deleted dataset at ``out``.
    """
    old = None
    if replace and out.exists():
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "dataset.yaml").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not out.exists():
                old.rename(out)  # the new one could not be published: keep the old one
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
