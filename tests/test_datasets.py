"""The dataset reader: format checks, band selection, normalisation, subsets, caching, bad inputs."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.transform import Affine

from search_spaces.errors import DataError
from trainers.datasets import DatasetInfo, SegmentationDataset, band_stats
from trainers.demo_data import write_demo_dataset


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """A dozen real 32-px 4-band chips; tests that damage data copy it first."""
    return write_demo_dataset(
        tmp_path_factory.mktemp("ds") / "demo", chips={"train": 8, "val": 2, "test": 2}, size=32, seed=3
    )


@pytest.fixture
def demo_copy(demo_root, tmp_path):
    return shutil.copytree(demo_root, tmp_path / "copy")


def _write(path, data, **profile):
    """Overwrite a chip file, keeping the georeferencing of what was there (when anything was)."""
    count, height, width = data.shape
    transform = Affine(1, 0, 400000, 0, -1, 2800000)
    if path.exists():
        with rasterio.open(path) as old:
            transform = old.transform
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
        crs="EPSG:32640", transform=transform, **profile,
    ) as dst:  # fmt: skip
        dst.write(data)


def test_info_and_model_builder_contract(demo_root):
    info = DatasetInfo.load(demo_root)
    assert info.name == "geonas-demo" and info.bands == ("blue", "green", "red", "nir")
    assert info.ignore_index == 255 and info.num_classes == 2 and set(info.splits) == {"train", "val", "test"}
    ds = SegmentationDataset(demo_root, "val")
    assert (ds.num_classes, ds.in_chans, ds.class_names) == (2, 4, ["background", "building"])
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (4, 32, 32)
    assert y.dtype == torch.int64 and y.shape == (32, 32)


def test_normalised_with_train_stats_and_nodata_zeroed(demo_root):
    ds = SegmentationDataset(demo_root, "train")
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    x, y = torch.stack(xs), torch.stack(ys)
    nodata = torch.zeros_like(y, dtype=torch.bool)
    for i in range(len(ds)):
        raw = ds.raw(i)[0]
        nodata[i] = torch.from_numpy((raw == 0).all(axis=0))
    assert nodata.any(), "fixture has a swath edge"
    assert (x.permute(1, 0, 2, 3)[:, nodata] == 0).all()
    assert (y[nodata] == 255).all()
    valid = x.permute(1, 0, 2, 3)[:, ~nodata]  # [C, N] over the train split's valid pixels
    assert torch.allclose(valid.mean(1), torch.zeros(4), atol=1e-3)
    assert torch.allclose(valid.std(1), torch.ones(4), atol=1e-3)


def test_bands_selected_by_name(demo_root):
    full = SegmentationDataset(demo_root, "test")
    two = SegmentationDataset(demo_root, "test", bands=["nir", "red"])
    assert two.in_chans == 2 and two.bands == ["nir", "red"]
    assert torch.equal(two[0][0], full[0][0][[3, 2]])
    with pytest.raises(DataError, match=r"'swir1' not in .*dataset.yaml; available: blue, green, red, nir"):
        SegmentationDataset(demo_root, "test", bands=["red", "swir1"])
    with pytest.raises(DataError, match="no split 'holdout'; available: train, val, test"):
        SegmentationDataset(demo_root, "holdout")


def test_subset_is_seeded(demo_root):
    a = SegmentationDataset(demo_root, "train", subset=4, seed=1)
    b = SegmentationDataset(demo_root, "train", subset=4, seed=1)
    others = {tuple(SegmentationDataset(demo_root, "train", subset=4, seed=s).chip_ids) for s in range(2, 8)}
    assert a.chip_ids == b.chip_ids and len(a) == 4
    assert set(a.chip_ids) <= set(DatasetInfo.load(demo_root).chip_ids("train"))
    assert len(others | {tuple(a.chip_ids)}) > 1
    assert len(SegmentationDataset(demo_root, "train", subset=4000)) == 8
    with pytest.raises(DataError, match="positive"):
        SegmentationDataset(demo_root, "train", subset=0)


def test_preload_equals_lazy_and_pickles_small(demo_root):
    pre = SegmentationDataset(demo_root, "train")
    lazy = SegmentationDataset(demo_root, "train", preload=False)
    for i in range(len(pre)):
        assert torch.equal(pre[i][0], lazy[i][0]) and torch.equal(pre[i][1], lazy[i][1])
    blob = pickle.dumps(pre, protocol=5)
    # 8 chips x 4 bands x 32 x 32 uint16 + masks: raw arrays, not float tensors or file handles
    assert len(blob) < 8 * 4 * 32 * 32 * 2 + 8 * 32 * 32 + 20_000
    back = pickle.loads(blob)
    assert torch.equal(back[3][0], pre[3][0])


def test_preloaded_dataset_travels_to_ray_workers(demo_root, ray_cluster):
    ds = SegmentationDataset(demo_root, "train")
    ref = ray_cluster.put(ds)

    @ray_cluster.remote
    def total(d):
        return float(sum(d[i][0].double().sum() for i in range(len(d))))

    expected = float(sum(ds[i][0].double().sum() for i in range(len(ds))))
    assert ray_cluster.get(total.remote(ref)) == pytest.approx(expected)


def test_stats_cached_and_recomputed_when_train_changes(demo_copy):
    info = DatasetInfo.load(demo_copy)
    stats = demo_copy / "stats.json"
    mean, std = band_stats(info, ["red"])
    assert len(mean) == len(std) == 1 and std[0] > 0
    stamp = stats.stat().st_mtime_ns
    band_stats(info)
    assert stats.stat().st_mtime_ns == stamp, "unchanged train split must hit the cache"
    # Changing a train chip (new mtime/size) recomputes.
    chip = info.chip_paths("train", info.chip_ids("train")[0])[0]
    with rasterio.open(chip, "r+") as dst:
        data = dst.read()
        dst.write(np.where(data > 0, data // 2 + 1, 0).astype(data.dtype))
    os.utime(chip, ns=(stamp + 10**9, stamp + 10**9))
    mean2, _ = band_stats(info, ["red"])
    assert mean2[0] < mean[0]
    fresh = json.loads(stats.read_text())
    assert fresh["chips"] == 8 and set(fresh["bands"]) == set(info.bands)
    stats.write_text("{broken")
    assert band_stats(info, ["red"]) == (mean2, band_stats(info, ["red"])[1])


def test_info_errors(tmp_path, demo_copy):
    with pytest.raises(DataError, match="dataset folder not found"):
        DatasetInfo.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty/dataset.yaml: not found"):
        DatasetInfo.load(tmp_path / "empty")
    meta = yaml.safe_load((demo_copy / "dataset.yaml").read_text())
    bad_cases = [
        ({**meta, "bands": []}, "'bands' must be a non-empty list"),
        ({**meta, "classes": ["a", "a"]}, "'classes' lists a more than once"),
        ({**meta, "ignore_index": 1}, "ignore_index 1 is also the class 'building'"),
        ({**meta, "splits": {"val": "val"}}, "needs a 'train' entry"),
        ({k: v for k, v in meta.items() if k != "name"}, "'name' must be"),
    ]
    for raw, message in bad_cases:
        (demo_copy / "dataset.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(DataError, match=message):
            DatasetInfo.load(demo_copy)
    (demo_copy / "dataset.yaml").write_text("name: [unclosed")
    with pytest.raises(DataError, match="not valid YAML"):
        DatasetInfo.load(demo_copy)


def test_missing_folder_names_it(demo_copy):
    shutil.rmtree(demo_copy / "val" / "masks")
    with pytest.raises(DataError, match=r"val/masks: folder not found"):
        SegmentationDataset(demo_copy, "val")


def test_missing_mask_names_the_image(demo_copy):
    info = DatasetInfo.load(demo_copy)
    cid = info.chip_ids("test")[0]
    (demo_copy / "test" / "masks" / f"{cid}.tif").unlink()
    with pytest.raises(DataError, match=rf"{cid}.tif: no mask for this chip"):
        SegmentationDataset(demo_copy, "test")


def test_size_mismatch_names_the_mask(demo_copy):
    info = DatasetInfo.load(demo_copy)
    cid = info.chip_ids("test")[1]
    _write(demo_copy / "test" / "masks" / f"{cid}.tif", np.zeros((1, 16, 32), np.uint8))
    with pytest.raises(DataError, match=rf"masks/{cid}.tif: mask is 32x16 px but its image .* is 32x32"):
        SegmentationDataset(demo_copy, "test")


def test_corrupt_files_name_the_file(demo_copy):
    info = DatasetInfo.load(demo_copy)
    cid0, cid1 = info.chip_ids("test")
    garbage = demo_copy / "test" / "images" / f"{cid0}.tif"
    garbage.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(DataError, match=rf"images/{cid0}.tif: not a readable raster"):
        SegmentationDataset(demo_copy, "test")
    lazy = SegmentationDataset(demo_copy, "test", preload=False)  # lazy: fails on the chip itself
    assert len(lazy) == 2
    with pytest.raises(DataError, match=rf"{cid0}.tif"):
        lazy[0]
    truncated = demo_copy / "test" / "images" / f"{cid1}.tif"
    _write(truncated, np.ones((4, 32, 32), np.uint16), compress="deflate")
    truncated.write_bytes(truncated.read_bytes()[:-200])
    with pytest.raises(DataError, match=rf"{cid1}.tif"):
        lazy[1]


def test_mask_value_outside_classes_names_the_file(demo_copy):
    info = DatasetInfo.load(demo_copy)
    cid = info.chip_ids("val")[0]
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[0, :3, :3] = 7
    _write(demo_copy / "val" / "masks" / f"{cid}.tif", mask)
    with pytest.raises(DataError, match=rf"masks/{cid}.tif: mask values \[7\] are outside the classes 0..1"):
        SegmentationDataset(demo_copy, "val")


def test_band_count_mismatch_names_the_file(demo_copy):
    info = DatasetInfo.load(demo_copy)
    cid = info.chip_ids("val")[1]
    _write(demo_copy / "val" / "images" / f"{cid}.tif", np.ones((3, 32, 32), np.uint16))
    with pytest.raises(DataError, match=rf"images/{cid}.tif: has 3 bands but dataset.yaml lists 4"):
        SegmentationDataset(demo_copy, "val")


def test_georeferencing_mismatch_names_the_mask(demo_copy):
    info = DatasetInfo.load(demo_copy)
    cid = info.chip_ids("test")[0]
    mask_path = demo_copy / "test" / "masks" / f"{cid}.tif"
    with rasterio.open(mask_path, "r+") as dst:
        dst.transform = dst.transform * Affine.translation(5, 0)
    with pytest.raises(DataError, match=rf"masks/{cid}.tif: geotransform differs from its image"):
        SegmentationDataset(demo_copy, "test")
