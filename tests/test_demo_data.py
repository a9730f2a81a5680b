"""The demo generator writes the project's format as real GeoTIFFs, for any band count, learnably."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
import yaml

from search_spaces.errors import DataError, SpecError
from trainers.datasets import DatasetInfo, SegmentationDataset
from trainers.demo_data import BAND_WAVELENGTHS, demo_band_names, write_demo_dataset

TINY = {"train": 8, "val": 2, "test": 2}


@pytest.mark.parametrize("bands", [3, 4, 13])
def test_demo_writes_georeferenced_chips_for_any_band_count(tmp_path, bands):
    root = write_demo_dataset(tmp_path / "demo", chips=TINY, size=32, bands=bands, seed=1)
    info = DatasetInfo.load(root)
    assert len(info.bands) == bands and info.classes == ("background", "building")
    assert {"red", "green", "blue"} <= set(info.bands)
    if bands == 13:
        assert list(info.bands) == list(BAND_WAVELENGTHS)
    for split, n in TINY.items():
        assert len(info.chip_ids(split)) == n
    nodata_seen = 0
    for cid in info.chip_ids("train"):
        image_path, mask_path = info.chip_paths("train", cid)
        with rasterio.open(image_path) as src, rasterio.open(mask_path) as msk:
            assert src.crs.to_epsg() == 32640 and src.res == (1.0, 1.0)
            assert src.count == bands and src.dtypes[0] == "uint16" and src.nodata == 0
            assert (src.width, src.height) == (32, 32) and msk.transform == src.transform
            assert msk.count == 1 and msk.dtypes[0] == "uint8"
            mask = msk.read(1)
            assert set(np.unique(mask)) <= {0, 1, 255}
            nodata_seen += int((src.read() == 0).all(axis=0).sum())
            assert src.descriptions == tuple(info.bands)
    assert nodata_seen > 0, "the first scene has a swath edge with nodata"
    ds = SegmentationDataset(root, "train")
    assert ds.in_chans == bands and ds.num_classes == 2
    assert (root / "stats.json").is_file()


def test_demo_band_names():
    assert demo_band_names(3) == ["red", "green", "blue"]
    assert demo_band_names(4) == ["blue", "green", "red", "nir"]
    assert demo_band_names(6) == ["blue", "green", "red", "nir", "swir1", "swir2"]
    assert len(demo_band_names(20)) == 20 and len(set(demo_band_names(20))) == 20
    assert demo_band_names(["nir", "red", "green"]) == ["nir", "red", "green"]
    with pytest.raises(SpecError, match="at least 3 bands"):
        demo_band_names(2)
    with pytest.raises(SpecError, match="coastal, blue"):
        demo_band_names(["red", "ultraviolet", "green"])


def test_demo_is_deterministic_by_seed(tmp_path):
    a = write_demo_dataset(tmp_path / "a", chips={"train": 3}, size=16, seed=5)
    b = write_demo_dataset(tmp_path / "b", chips={"train": 3}, size=16, seed=5)
    c = write_demo_dataset(tmp_path / "c", chips={"train": 3}, size=16, seed=6)
    da, db, dc = (SegmentationDataset(r, "train") for r in (a, b, c))
    for i in range(3):
        assert np.array_equal(da.raw(i)[0], db.raw(i)[0]) and np.array_equal(da.raw(i)[1], db.raw(i)[1])
    assert not np.array_equal(da.raw(0)[0], dc.raw(0)[0])


def test_demo_refuses_to_clobber(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        write_demo_dataset(out, chips={"train": 1}, size=16)
    with pytest.raises(DataError, match="no dataset.yaml"):
        write_demo_dataset(out, chips={"train": 1}, size=16, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    root = write_demo_dataset(tmp_path / "ds", chips={"train": 1}, size=16)
    write_demo_dataset(root, chips={"train": 2}, size=16, overwrite=True)
    assert len(DatasetInfo.load(root).chip_ids("train")) == 2
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    with pytest.raises(SpecError):
        write_demo_dataset(tmp_path / "x", chips={"val": 2}, size=16)
    meta = yaml.safe_load((root / "dataset.yaml").read_text())
    assert meta["crs"] == "EPSG:32640" and meta["ignore_index"] == 255


def _pixels(ds: SegmentationDataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    x = torch.stack(xs).permute(0, 2, 3, 1).reshape(-1, ds.in_chans)
    y = torch.stack(ys).reshape(-1)
    keep = y != ds.ignore_index
    return x[keep], y[keep]


def _miou(pred: torch.Tensor, y: torch.Tensor) -> float:
    ious = [
        ((pred == c) & (y == c)).sum().item() / max(((pred == c) | (y == c)).sum().item(), 1) for c in (0, 1)
    ]
    return sum(ious) / 2


def test_demo_is_learnable_but_not_trivial(tmp_path):
    """A per-pixel logistic classifier beats the majority class clearly, and stays far from perfect.

    Shape and shadows are what it cannot see; bench/demo_learnability.py shows a tiny CNN does far
    better (it writes bench/results/demo_learnability.json).
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    root = write_demo_dataset(tmp_path / "demo", chips={"train": 64, "test": 32}, size=32, seed=0)
    xtr, ytr = _pixels(SegmentationDataset(root, "train"))
    xte, yte = _pixels(SegmentationDataset(root, "test"))
    linear = torch.nn.Linear(xtr.shape[1], 2)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=100)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xtr), ytr)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = linear(xte).argmax(1)
    majority = torch.full_like(yte, int(torch.bincount(ytr).argmax()))
    majority_miou, linear_miou = _miou(majority, yte), _miou(pred, yte)
    print(f"majority mIoU {majority_miou:.3f}, logistic per-pixel mIoU {linear_miou:.3f}")
    assert linear_miou > majority_miou + 0.04
    assert linear_miou < 0.7


def test_catalog_builds_once_and_lists_names(tmp_path):
    from search_spaces.errors import NotFound
    from trainers.catalog import list_datasets, prepare_dataset

    assert {"demo", "dubai-aerial"} <= set(list_datasets())
    root = prepare_dataset("demo", tmp_path / "d", chips={"train": 2}, size=16)
    stamp = (root / "dataset.yaml").stat().st_mtime_ns
    assert prepare_dataset("demo", tmp_path / "d") == root
    assert (root / "dataset.yaml").stat().st_mtime_ns == stamp
    with pytest.raises(NotFound, match="no dataset recipe 'mnist'; available: demo, dubai-aerial"):
        prepare_dataset("mnist", tmp_path / "m")
