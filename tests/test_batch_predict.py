"""Batch prediction: scene planning (bands, resume, unreadable scenes) and the shared blend/write pieces."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from search_spaces.errors import DataError
from trainers.blend import StripBlender
from trainers.scene_output import SceneWriter, write_vrt
from trainers.scenes import plan_scenes
from trainers.tiling import SceneGrid

BANDS = ["blue", "green", "red", "nir"]


def write_scene(path, height=70, width=90, seed=0, bands=4, names=None, x0=300000.0):
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 3000, size=(bands, height, width)).astype(np.uint16)
    data[:, :6, :6] = 0
    profile = dict(driver="GTiff", height=height, width=width, count=bands, dtype="uint16", crs="EPSG:32640",
                   transform=from_origin(x0, 2800000, 0.5, 0.5), nodata=0)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if names:
            dst.descriptions = tuple(names)
    return path


def truncate(path):
    """A GeoTIFF whose header reads but whose pixels do not: the second half of the file is gone."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _plan(patterns, out, **kw):
    args = dict(model_id="m1", model_bands=BANDS, trained_bands=None, out_dir=out, tile=32, overlap=8,
                probabilities=False)  # fmt: skip
    return plan_scenes(patterns, **(args | kw))


def test_plan_expands_folders_and_globs_and_refuses_other_bands(tmp_path):
    write_scene(tmp_path / "a.tif", names=BANDS)
    (tmp_path / "sub").mkdir()
    write_scene(tmp_path / "sub" / "b.tif", names=BANDS[::-1])
    (tmp_path / "c.tif").write_bytes(b"not a tiff")
    plans = _plan([str(tmp_path)], tmp_path / "out")
    states = {p.path.name: (p.state, p.bands) for p in plans}
    assert states["a.tif"] == ("pending", [1, 2, 3, 4])
    assert states["b.tif"] == ("pending", [4, 3, 2, 1])  # matched by band name, not position
    assert states["c.tif"][0] == "failed" and "c.tif" in next(p.error for p in plans if p.path.name == "c.tif")
    assert [p.path.name for p in _plan([str(tmp_path / "*.tif")], tmp_path / "out")] == ["a.tif", "c.tif"]
    write_scene(tmp_path / "rgb.tif", bands=3, names=BANDS[:3])
    with pytest.raises(DataError, match=r"rgb.tif has 3 bands.*needs 4"):
        _plan([str(tmp_path / "rgb.tif")], tmp_path / "out")
    with pytest.raises(DataError, match="missing.tif does not exist"):
        _plan([str(tmp_path / "missing.tif")], tmp_path / "out")


def test_blender_refuses_windows_out_of_order_and_a_short_scene(tmp_path):
    grid = SceneGrid.of(70, 90, 32, 8)
    blender = StripBlender(grid, 2, lambda *a: None)
    windows = list(grid.windows())
    ones, valid = np.ones((2, 32, 32), np.float32), np.ones((32, 32), bool)
    with pytest.raises(DataError, match="out of order"):
        blender.add(*windows[1], ones, valid)
    blender.add(*windows[0], ones, valid)
    with pytest.raises(DataError, match=f"{len(grid)} windows; 1 were blended"):
        blender.finish()


def test_outputs_are_cogs_published_complete_and_mosaicked(tmp_path):
    scenes = [write_scene(tmp_path / f"s{i}.tif", seed=i, x0=300000 + 45 * i) for i in range(2)]
    out = tmp_path / "out"
    plans = _plan([str(s) for s in scenes], out, probabilities=True)
    for plan in plans:
        writer = SceneWriter(plan.outputs, plan.header.profile, 2, {"GEONAS_MODEL": "m1"})
        blender = StripBlender(plan.grid, 2, writer, probabilities=True)
        probs = np.full((2, 32, 32), 0.5, np.float32)
        for y, x in plan.grid.windows():
            blender.add(y, x, probs, np.ones((32, 32), bool))
        blender.finish()
        writer.commit()
    assert sorted(p.name for p in out.iterdir()) == ["s0.probs.tif", "s0.tif", "s1.probs.tif", "s1.tif"]
    with rasterio.open(out / "s0.tif") as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and dst.overviews(1) == []  # 90 px: no overview
        assert dst.profile["tiled"] and dst.profile["compress"] == "deflate"
    assert [p.state for p in _plan([str(s) for s in scenes], out, probabilities=True)] == ["skipped", "skipped"]
    assert [p.state for p in _plan([str(s) for s in scenes], out, model_id="other")] == ["pending", "pending"]
    vrt, left_out = write_vrt([p.outputs.mask for p in plans], out / "mosaic.vrt")
    assert left_out == []
    with rasterio.open(vrt) as mosaic:
        assert mosaic.crs.to_epsg() == 32640 and (mosaic.width, mosaic.height) == (90 + 90, 70)
        assert (mosaic.read(1)[:, :90] == rasterio.open(out / "s0.tif").read(1)).all()
