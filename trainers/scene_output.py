"""Where a predicted scene is written and how: a Cloud-Optimized GeoTIFF per scene, a VRT over all.

A scene's mask (and optional probabilities) is first written strip by strip to a hidden temporary
tiled GeoTIFF, then copied by GDAL's COG driver (tiled, deflate, internal overviews, the overviews
before the full-resolution data) to a second temporary name and renamed into place. The mask is
renamed last and carries the model's id and the scene's shape as tags, so a mask under its final
name means the scene is complete: a resumed job skips it, and a killed job leaves no half output
under a final name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

__all__ = ["SceneOutputs", "SceneWriter", "output_names", "is_complete", "write_vrt", "MODEL_TAG"]

MODEL_TAG = "GEONAS_MODEL"
_BLOCK = 256


@dataclass(frozen=True)
class SceneOutputs:
    """The files one scene's prediction becomes under the output folder."""

    mask: Path
    probabilities: Path | None


def output_names(scenes: Sequence[Path], out_dir: Path, probabilities: bool) -> list[SceneOutputs]:
    """``OUT/<scene stem>.tif`` (and ``<stem>.probs.tif``) per scene; a repeated stem gets ``-2``, ``-3``…"""
    seen: dict[str, int] = {}
    outputs = []
    for scene in scenes:
        stem = Path(scene).stem
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        outputs.append(SceneOutputs(out_dir / f"{name}.tif", out_dir / f"{name}.probs.tif" if probabilities else None))
    return outputs


def is_complete(outputs: SceneOutputs, scene_profile: dict[str, Any], model_id: str) -> bool:
    """The scene's outputs exist under their final names, from this model, with the scene's grid."""
    if not outputs.mask.is_file() or (outputs.probabilities is not None and not outputs.probabilities.is_file()):
        return False
    try:
        with rasterio.open(outputs.mask) as dst:
            same_grid = (dst.height, dst.width, dst.crs, dst.transform) == (
                scene_profile["height"],
                scene_profile["width"],
                scene_profile["crs"],
                scene_profile["transform"],
            )
            return same_grid and dst.tags().get(MODEL_TAG) == model_id
    except rasterio.errors.RasterioError:
        return False


class SceneWriter:
    """Writes one scene's strips (a :class:`~trainers.blend.StripSink`); :meth:`commit` publishes them."""

    def __init__(
        self, outputs: SceneOutputs, scene_profile: dict[str, Any], num_classes: int, tags: dict[str, str]
    ) -> None:
        self.outputs = outputs
        outputs.mask.parent.mkdir(parents=True, exist_ok=True)
        profile = {
            "driver": "GTiff",
            "height": scene_profile["height"],
            "width": scene_profile["width"],
            "crs": scene_profile["crs"],
            "transform": scene_profile["transform"],
            "compress": "deflate",
            "tiled": True,
            "blockxsize": _BLOCK,
            "blockysize": _BLOCK,
        }
        self._width = profile["width"]
        self._parts: list[tuple[Path, Path, str]] = []  # (strips file, final file, overview resampling)
        self._mask = self._open(outputs.mask, profile, count=1, nodata=255, resampling="mode")
        self._mask.update_tags(**tags)
        self._probs = (
            self._open(outputs.probabilities, profile, count=num_classes, nodata=None, resampling="average")
            if outputs.probabilities is not None
            else None
        )

    def _open(self, final: Path, profile: dict[str, Any], *, count: int, nodata, resampling: str):
        strips = final.with_name(f".{final.name}.strips.tif")
        self._parts.append((strips, final, resampling))
        return rasterio.open(strips, "w", **profile, count=count, dtype="uint8", nodata=nodata)

    def __call__(self, y: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        window = Window(0, y, self._width, labels.shape[0])
        self._mask.write(labels[None], window=window)
        if self._probs is not None and probs is not None:
            self._probs.write(probs, window=window)

    def commit(self) -> SceneOutputs:
        """Close the strip files, make each a COG under a temporary name, rename it into place (mask last)."""
        self._close()
        for strips, final, resampling in reversed(self._parts):  # probabilities first, the mask last
            cog = final.with_name(f".{final.name}.cog.tif")
            rasterio.shutil.copy(
                strips, cog, driver="COG", compress="DEFLATE", blocksize=_BLOCK, overview_resampling=resampling
            )
            os.replace(cog, final)
            strips.unlink()
        return self.outputs

    def abort(self) -> None:
        """Remove everything this writer made (its final names are untouched)."""
        self._close()
        for strips, final, _ in self._parts:
            for path in (strips, final.with_name(f".{final.name}.cog.tif")):
                path.unlink(missing_ok=True)

    def _close(self) -> None:
        for handle in (self._mask, self._probs):
            if handle is not None and not handle.closed:
                handle.close()


def write_vrt(masks: Sequence[Path], path: Path) -> tuple[Path | None, list[Path]]:
    """A VRT mosaic of ``masks`` (paths relative to the VRT) on the first mask's CRS and pixel size.

    Masks on another CRS or pixel size cannot share one mosaic without resampling and are left out of
    it and returned, for the caller to report. No VRT (None) when there is no mask.
    """
    if not masks:
        return None, []
    infos = []
    for mask in masks:
        with rasterio.open(mask) as src:
            infos.append((mask, src.crs, src.transform, src.width, src.height))
    _, crs, first, _, _ = infos[0]
    xres, yres = first.a, first.e
    same = [i for i in infos if i[1] == crs and (i[2].a, i[2].e, i[2].b, i[2].d) == (xres, yres, 0.0, 0.0)]
    left = min(t.c for _, _, t, _, _ in same)
    right = max(t.c + w * xres for _, _, t, w, _ in same)
    tops, bottoms = [t.f for _, _, t, _, _ in same], [t.f + h * yres for _, _, t, _, h in same]
    top, bottom = (max(tops), min(bottoms)) if yres < 0 else (min(tops), max(bottoms))
    width = round((right - left) / xres)
    height = round((bottom - top) / yres)
    sources = []
    for mask, _, t, w, h in same:
        x_off, y_off = round((t.c - left) / xres), round((t.f - top) / yres)
        rel = escape(os.path.relpath(mask, path.parent))
        sources.append(
            f'    <ComplexSource><SourceFilename relativeToVRT="1">{rel}</SourceFilename><SourceBand>1</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{x_off}" yOff="{y_off}" xSize="{w}" ySize="{h}"/><NODATA>255</NODATA></ComplexSource>'
        )
    geo = ", ".join(repr(float(v)) for v in (left, xres, 0.0, top, 0.0, yres))
    doc = (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
        f"  <SRS>{escape(crs.to_wkt())}</SRS>\n  <GeoTransform>{geo}</GeoTransform>\n"
        '  <VRTRasterBand dataType="Byte" band="1">\n    <NoDataValue>255</NoDataValue>\n'
        + "\n".join(sources)
        + "\n  </VRTRasterBand>\n</VRTDataset>\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)
    kept = {i[0] for i in same}
    return path, [i[0] for i in infos if i[0] not in kept]
