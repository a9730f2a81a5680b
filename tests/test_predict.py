"""Whole-scene prediction: georeferencing kept, tiling invisible, nodata respected."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from search_spaces.errors import DataError
from trainers.predict import blend_weights, predict_scene

torch.set_num_threads(1)


def _scene(path, height=150, width=210, bands=4, nodata_corner=True):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 3000, size=(bands, height, width)).astype(np.uint16)
    if nodata_corner:
        data[:, :10, :10] = 0
    profile = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=bands,
        dtype="uint16",
        crs="EPSG:32640",
        transform=from_origin(300000, 2800000, 0.5, 0.5),
        nodata=0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path, data


class PixelModel(torch.nn.Module):
    """A 1×1 conv: its prediction at a pixel depends on that pixel alone, so tiling must not show."""

    def __init__(self, bands: int, classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(bands, classes, 1)

    def forward(self, x):
        return self.conv(x)


def test_prediction_keeps_crs_and_transform_and_matches_one_pass(tmp_path):
    scene, data = _scene(tmp_path / "scene.tif")
    model = PixelModel(4, 3).eval()
    mean, std = [1500.0] * 4, [800.0] * 4
    out, probs = tmp_path / "mask.tif", tmp_path / "probs.tif"
    calls = []
    report = predict_scene(
        model,
        scene,
        out,
        band_indexes=[1, 2, 3, 4],
        mean=mean,
        std=std,
        num_classes=3,
        tile=64,
        overlap=16,
        batch_size=3,
        probabilities=probs,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert report.tiles > 6 and calls[-1] == (report.tiles, report.tiles)
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.profile["compress"] == "deflate" and dst.profile["tiled"]
        labels = dst.read(1)
    x = (torch.from_numpy(data.astype(np.float32)) - 1500.0) / 800.0
    with torch.inference_mode():
        expected = model(x[None]).argmax(1)[0].numpy().astype(np.uint8)
    valid = ~(data == 0).all(axis=0)
    assert (labels[~valid] == 255).all()
    agree = (labels[valid] == expected[valid]).mean()
    assert agree > 0.999, agree
    with rasterio.open(probs) as p:
        assert p.count == 3


def test_blend_weights_fall_towards_edges():
    w = blend_weights(64, 16)
    assert w[32, 32] == 1.0 and w[0, 0] < w[8, 8] < w[16, 16]


def test_bad_band_request_names_the_scene(tmp_path):
    scene, _ = _scene(tmp_path / "s.tif", bands=3)
    with pytest.raises(DataError, match="s.tif"):
        predict_scene(
            PixelModel(4, 2),
            scene,
            tmp_path / "o.tif",
            band_indexes=[1, 2, 3, 4],
            mean=[0] * 4,
            std=[1] * 4,
            num_classes=2,
        )
