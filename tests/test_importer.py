"""The importer: scenes + masks -> the dataset format; georeferencing kept; split by scene; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image
from rasterio.transform import Affine
from rasterio.windows import Window
from typer.testing import CliRunner

from search_spaces.errors import DataError, SpecError
from service.cli import app
from trainers.datasets import DatasetInfo, SegmentationDataset
from trainers.importer import BadPairs, ClassTable, dubai_defaults, import_dataset
from trainers.trial_data import SplitRef, load_split

DUBAI = Path("/work/shared/data/dubai-aerial")
COLOURS = {"background": (10, 120, 10), "building": (200, 30, 30), "road": (90, 90, 200)}


def _geotiff(path: Path, data: np.ndarray, *, nodata=None, descriptions=None, origin=(400_000, 2_800_000),
             crs="EPSG:32640", res=0.5):  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name,
        crs=crs, transform=Affine(res, 0, origin[0], 0, -res, origin[1]), nodata=nodata,
        tiled=True, blockxsize=16, blockysize=16,
    ) as dst:  # fmt: skip
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions


@pytest.fixture
def geo_source(tmp_path):
    """Three georeferenced 3-band scenes (80x70 px, uint16, nodata 0) with index masks."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for i, scene in enumerate(["scene_a", "scene_b", "scene_c"]):
        image = rng.integers(1, 5000, (3, 70, 80)).astype(np.uint16)
        image[:, :5, :] = 0  # a nodata strip along the top edge
        mask = rng.integers(0, 3, (1, 70, 80)).astype(np.uint8)
        _geotiff(src / "images" / f"{scene}.tif", image, nodata=0, descriptions=("red", "green", "nir"),
                 origin=(400_000 + 1000 * i, 2_800_000))  # fmt: skip
        _geotiff(src / "masks" / f"{scene}.tif", mask, origin=(400_000 + 1000 * i, 2_800_000))
    (tmp_path / "classes.json").write_text(json.dumps([{"id": i, "name": n} for i, n in enumerate(COLOURS)]))
    return src


SPLIT = {"train": ["images/scene_a.tif"], "val": ["images/scene_b.tif"], "test": ["images/scene_c.tif"]}


def test_geotiff_source_keeps_crs_and_window_transforms(geo_source, tmp_path):
    out = import_dataset(geo_source, tmp_path / "out", classes=tmp_path / "classes.json", split=SPLIT,
                         chip_size=32, overlap=8)  # fmt: skip
    info = DatasetInfo.load(out)
    assert info.bands == ("red", "green", "nir") and info.classes == tuple(COLOURS)
    # step 24: columns 0, 24, 48 (48 + 32 = 80); rows 0, 24, then 38 shifted to end at 70
    ids = info.chip_ids("train")
    assert len(ids) == 9 and "scene_a_r38_c48" in ids
    assert all(cid.startswith("scene_b") for cid in info.chip_ids("val"))
    with (
        rasterio.open(geo_source / "images" / "scene_a.tif") as src,
        rasterio.open(geo_source / "masks" / "scene_a.tif") as msk,
    ):
        for cid in ids:
            r, c = (int(v) for v in cid.split("_r")[1].split("_c"))
            window = Window(c, r, 32, 32)
            image_path, mask_path = info.chip_paths("train", cid)
            with rasterio.open(image_path) as chip, rasterio.open(mask_path) as chip_mask:
                assert chip.crs == src.crs and chip.nodata == 0
                assert chip.transform == src.window_transform(window) == chip_mask.transform
                assert np.array_equal(chip.read(), src.read(window=window))
                expected = msk.read(1, window=window)
                expected[(src.read(window=window) == 0).all(axis=0)] = 255  # no label without image
                assert np.array_equal(chip_mask.read(1), expected)
    assert info.crs == "EPSG:32640" and (out / "stats.json").is_file()
    ds = SegmentationDataset(out, "train", bands=["nir", "red"])
    x, y = ds[0]  # scene_a_r0_c0: the top 5 rows are nodata
    assert (y[:5] == 255).all() and (x[:, :5] == 0).all() and (y[5:] < 3).all()
    shares = yaml.safe_load((out / "dataset.yaml").read_text())["import"]["class_pixels"]["train"]
    assert shares["ignore"] > 0 and min(shares[n] for n in COLOURS) > 0


def _png(path: Path, array: np.ndarray, mode: str | None = None, palette: list[int] | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if palette:
        image.putpalette(palette)
    image.save(path)


@pytest.fixture
def colour_source(tmp_path):
    """Ungeoreferenced JPEG/PNG tiles: RGB colour masks with black gaps, one palette mask, one tiny scene."""
    rng = np.random.default_rng(1)
    src = tmp_path / "colour"
    colours = np.array(list(COLOURS.values()), np.uint8)
    for tile, part, (h, w) in [("t1", "p1", (50, 64)), ("t1", "p2", (40, 40)), ("t2", "p1", (48, 48)),
                               ("t3", "p1", (20, 24))]:  # fmt: skip
        labels = rng.integers(0, 3, (h, w))
        rgb = colours[labels]
        rgb[:4, :4] = 0  # unannotated: black
        _png(src / tile / "images" / f"{part}.png", rng.integers(0, 255, (h, w, 3)).astype(np.uint8))
        if (tile, part) == ("t2", "p1"):  # a palette mask, like Dubai tiles 2 and 4
            pal_index = labels.astype(np.uint8) + 1
            pal_index[:4, :4] = 0
            palette = [0, 0, 0, *[v for c in COLOURS.values() for v in c]]
            _png(src / tile / "masks" / f"{part}.png", pal_index, "P", palette)
        else:
            _png(src / tile / "masks" / f"{part}.png", rgb)
    (tmp_path / "classes.json").write_text(
        json.dumps(
            [
                {"id": i, "name": n, "color": "#{:02X}{:02X}{:02X}".format(*c)}
                for i, (n, c) in enumerate(COLOURS.items())
            ]
        )
    )
    return src


COLOUR_KW = {
    "split": {"train": ["t1/*"], "val": ["t2/*"], "test": ["t3/*"]},
    "image_glob": "*/images/*.png",
    "mask_glob": "*/masks/*.png",
    "extra_colors": {"#000000": "ignore"},
}


def test_colour_masks_without_crs_get_local_pixel_grid(colour_source, tmp_path):
    out = import_dataset(colour_source, tmp_path / "out", classes=tmp_path / "classes.json", chip_size=32,
                         **COLOUR_KW)  # fmt: skip
    info = DatasetInfo.load(out)
    assert info.bands == ("red", "green", "blue") and "local pixel CRS" in info.crs
    ids = info.chip_ids("train")
    # t1/p1 50x64 -> rows 0, 18 x cols 0, 32; t1/p2 40x40 -> rows 0, 8 x cols 0, 8
    assert ids == sorted([f"t1__p1_r{r}_c{c}" for r in (0, 18) for c in (0, 32)]
                         + [f"t1__p2_r{r}_c{c}" for r in (0, 8) for c in (0, 8)])  # fmt: skip
    with rasterio.open(info.chip_paths("train", "t1__p1_r18_c32")[0]) as chip:
        assert "pixel grid of t1/p1" in chip.crs.to_wkt()
        assert chip.transform == Affine(1, 0, 32, 0, 1, 18)
    source = np.asarray(Image.open(colour_source / "t1" / "images" / "p1.png"))
    with rasterio.open(info.chip_paths("train", "t1__p1_r18_c32")[0]) as chip:
        assert np.array_equal(chip.read(), np.moveaxis(source[18:50, 32:64], -1, 0))
    for split in ("train", "val"):  # RGB and palette masks decode alike: black -> ignore
        ds = SegmentationDataset(out, split)
        y = ds[0][1]
        assert (y[:4, :4] == 255).all() and set(np.unique(y[4:, 4:]).tolist()) <= {0, 1, 2}
    # the 20x24 scene is padded to one 32x32 chip: nodata in the image, ignore in the mask
    (test_id,) = info.chip_ids("test")
    x, y = SegmentationDataset(out, "test")[0]
    assert test_id == "t3__p1_r0_c0" and (y[20:, :] == 255).all() and (y[:, 24:] == 255).all()
    assert (x[:, 20:, :] == 0).all()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_split_files(colour_source, tmp_path):
    classes = tmp_path / "classes.json"
    kw = {k: v for k, v in COLOUR_KW.items() if k != "split"}
    (tmp_path / "split.yaml").write_text(yaml.safe_dump({"train": ["t1/*", "t3/*"], "val": ["t2/*"]}))
    out = import_dataset(colour_source, tmp_path / "a", classes=classes, split=tmp_path / "split.yaml",
                         chip_size=32, **kw)  # fmt: skip
    assert set(DatasetInfo.load(out).splits) == {"train", "val"}
    assert any(c.startswith("t3") for c in DatasetInfo.load(out).chip_ids("train"))
    (tmp_path / "split.csv").write_text("# path,split\nt1/images/p1.png,train\nt2/*,test\n")
    out = import_dataset(colour_source, tmp_path / "b", classes=classes, split=tmp_path / "split.csv",
                         chip_size=32, **kw)  # fmt: skip
    info = DatasetInfo.load(out)
    assert {c.split("_r")[0] for c in info.chip_ids("train")} == {"t1__p1"}  # unmatched scenes left out
    assert {c.split("_r")[0] for c in info.chip_ids("test")} == {"t2__p1"}


def test_split_tables(geo_source, tmp_path):
    """CSV split tables: a header in any column order with extra columns, or none; paths with spaces."""
    for name in ("images", "masks"):
        (geo_source / name / "scene_b.tif").rename(geo_source / name / "scene b.tif")
    kw = {"classes": tmp_path / "classes.json", "chip_size": 32}
    table = tmp_path / "table.csv"
    table.write_text(
        'notes,split,id,image\n"cloudy, hazy",train,1,images/scene_a.tif\n,val,2,images/scene b.tif\n'
        "# a comment\n,test,3,./images/scene_c.tif\n"
    )
    info = DatasetInfo.load(import_dataset(geo_source, tmp_path / "a", split=table, **kw))
    assert {s: {c.split("_r")[0] for c in info.chip_ids(s)} for s in info.splits} == {
        "train": {"scene_a"}, "val": {"scene_b"}, "test": {"scene_c"}}  # fmt: skip
    table.write_text("split\tpath\ntrain\timages/scene_a.tif\nval\timages/scene b.tif\n")  # tabs
    assert set(DatasetInfo.load(import_dataset(geo_source, tmp_path / "b", split=table, **kw)).splits) == {
        "train", "val"}  # fmt: skip
    table.write_text('images/scene_a.tif,train\n"images/scene b.tif",val\n')  # headerless: path, split
    assert set(DatasetInfo.load(import_dataset(geo_source, tmp_path / "c", split=table, **kw)).splits) == {
        "train", "val"}  # fmt: skip
    for text, error in [
        ("name,fold\nimages/scene_a.tif,train\n", r"table.csv:1: the header \['name', 'fold'\] needs a column "
         r"named path or image or .* and one named 'split'"),
        ("image,subset\nimages/scene_a.tif,train\n", "needs a column named path or image"),
        ("images/scene_a.tif,train,x\n", r"table.csv:1: expected 'path,split'"),
        ("path,split\n", "has a header but no rows"),
        ("path,split\nimages/scene_a.tif,\n", r"table.csv:2: a row needs both an image path and a split"),
    ]:  # fmt: skip
        table.write_text(text)
        with pytest.raises(DataError, match=error):
            import_dataset(geo_source, tmp_path / "d", split=table, **kw)
    assert not (tmp_path / "d").exists()


def test_unknown_colour_names_file_and_colour(colour_source, tmp_path):
    kw = {**COLOUR_KW, "extra_colors": None}
    with pytest.raises(
        DataError, match=r"t1/masks/p1.png: colours not in the class table: #000000 \(16 px\)"
    ) as caught:
        import_dataset(colour_source, tmp_path / "out", classes=tmp_path / "classes.json", chip_size=32, **kw)
    assert str(caught.value).startswith("4 of 4 image/mask pairs cannot be imported")  # every one, not the first
    assert [p["mask"] for p in caught.value.pairs] == ["t1/masks/p1.png", "t1/masks/p2.png", "t2/masks/p1.png",
                                                      "t3/masks/p1.png"]  # fmt: skip
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial*"))
    # palette masks name the colour and the palette index
    kw["split"] = {"train": ["t2/*"]}
    with pytest.raises(
        DataError, match=r"t2/masks/p1.png: colours not in the class table: #000000 \(palette index 0"
    ):
        import_dataset(colour_source, tmp_path / "out", classes=tmp_path / "classes.json", chip_size=32, **kw)


def test_scene_errors_name_the_file(colour_source, tmp_path):
    classes = tmp_path / "classes.json"
    (colour_source / "t1" / "masks" / "p2.png").unlink()
    with pytest.raises(DataError, match=r"t1/images/p2.png: no mask found; .* is 't1/p2'"):
        import_dataset(colour_source, tmp_path / "o", classes=classes, chip_size=32, **COLOUR_KW)
    _png(colour_source / "t1" / "masks" / "p2.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"t1/masks/p2.png: mask is 10x10 px but its image .*t1/images/p2.png"
    ):
        import_dataset(colour_source, tmp_path / "o", classes=classes, chip_size=32, **COLOUR_KW)
    both = {**COLOUR_KW, "split": {"train": ["t1/*"], "val": ["t*/images/p2.png"], "test": ["t3/*"]}}
    with pytest.raises(DataError, match=r"t1/images/p2.png: matches splits \['train', 'val'\]"):
        import_dataset(colour_source, tmp_path / "o", classes=classes, chip_size=32, **both)
    empty = {**COLOUR_KW, "split": {"train": ["t1/*"], "val": ["t9/*"]}}
    with pytest.raises(DataError, match=r"no scene matches split\(s\) \['val'\]"):
        import_dataset(colour_source, tmp_path / "o", classes=classes, chip_size=32, **empty)
    with pytest.raises(DataError, match="no images match"):
        import_dataset(colour_source, tmp_path / "o", classes=classes, chip_size=32,
                       **{**COLOUR_KW, "image_glob": "*/images/*.jp2"})  # fmt: skip
    with pytest.raises(SpecError, match="overlap"):
        import_dataset(colour_source, tmp_path / "o", classes=classes, chip_size=32, overlap=32, **COLOUR_KW)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(DataError, match="busy: folder exists and is not empty"):
        import_dataset(colour_source, tmp_path / "busy", classes=classes, chip_size=32, **COLOUR_KW)


def test_index_mask_values_outside_classes(geo_source, tmp_path):
    bad = np.full((1, 70, 80), 1, np.uint8)
    bad[0, 10, 10] = 9
    _geotiff(geo_source / "masks" / "scene_b.tif", bad, origin=(401_000, 2_800_000))
    with pytest.raises(DataError, match=r"masks/scene_b.tif: mask values \[9\] are not class ids 0..2"):
        import_dataset(
            geo_source, tmp_path / "o", classes=tmp_path / "classes.json", split=SPLIT, chip_size=32
        )
    out = import_dataset(geo_source, tmp_path / "o", classes=tmp_path / "classes.json", split=SPLIT,
                         chip_size=32, extra_colors={9: "road"})  # fmt: skip
    assert DatasetInfo.load(out).chip_ids("val")


def test_class_table_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"id": 0, "name": "a"}, {"id": 2, "name": "b"}]))
    with pytest.raises(DataError, match=r"c.json: class ids must be 0..1 without gaps"):
        ClassTable.load(path)
    path.write_text(json.dumps([{"id": 0, "name": "a", "color": "green"}]))
    with pytest.raises(DataError, match=r"c.json: colour 'green' is not #RRGGBB"):
        ClassTable.load(path)
    path.write_text("[{")
    with pytest.raises(DataError, match="c.json: not valid JSON"):
        ClassTable.load(path)
    path.write_text(json.dumps([{"id": 0, "name": "a", "color": "#000001"}]))
    with pytest.raises(DataError, match="extra_colors target 'b'"):
        ClassTable.load(path, {"#FFFFFF": "b"})
    table = ClassTable.load(path, {"#ffffff": "a", "#000000": "ignore"})
    assert table.colors == {1: 0, 0xFFFFFF: 0, 0: -1}
    with pytest.raises(DataError, match="class table not found"):
        ClassTable.load(tmp_path / "none.json")


@pytest.mark.skipif(not DUBAI.is_dir(), reason="needs the Dubai aerial data in ../shared/data")
def test_import_real_dubai_subset(tmp_path):
    """Real data: palette masks (tile 2) and RGB masks with unannotated black (tile 8 part 003).

    Class shares of the chips match the dataset README's per-tile table within 2 points (chips at
    scene edges overlap a little, so they count some pixels twice).
    """
    kw = dubai_defaults(DUBAI)
    kw["split"] = {"train": ["tile_2/*"], "val": ["tile_8/images/image_part_003.jpg"],
                   "test": ["tile_3/images/image_part_001.jpg"]}  # fmt: skip
    out = import_dataset(DUBAI, tmp_path / "dubai", chip_size=128, **kw)
    info = DatasetInfo.load(out)
    assert info.classes == ("unlabeled", "building", "land", "road", "vegetation", "water")
    assert info.bands == ("red", "green", "blue") and "local pixel CRS" in info.crs
    report = yaml.safe_load((out / "dataset.yaml").read_text())["import"]

    def shares(split):
        counts = report["class_pixels"][split]
        return {k: 100 * v / sum(counts.values()) for k, v in counts.items()}

    train, val = shares("train"), shares("val")
    readme_tile2 = {"unlabeled": 2.32, "building": 12.29, "land": 59.66, "road": 12.70, "vegetation": 5.77,
                    "water": 7.26, "ignore": 0.0}  # fmt: skip
    for name, expected in readme_tile2.items():
        assert abs(train[name] - expected) < 2.0, (name, train[name], expected)
    assert abs(val["ignore"] - 17.2) < 1.5  # 545,723 black px of 3.18 M in tile 8 part 003
    assert val["building"] > 10
    scenes = {s: {c.split("_r")[0] for c in info.chip_ids(s)} for s in ("train", "val", "test")}
    assert len(scenes["train"]) == 9 and scenes["val"] == {"tile_8__image_part_003"}
    assert not (scenes["train"] & scenes["val"]) and not (scenes["train"] & scenes["test"])
    ds = SegmentationDataset(out, "val", subset=8, seed=0)
    x, y = ds[0]
    assert x.shape == (3, 128, 128) and y.max() <= 255 and ds.num_classes == 6


# --------------------------------------------------------------------------- a public set, as a new user has it

#: Palette PNG masks: index 1 = forest, 2 = non-forest, 0 = not labelled; the colours are only for display.
S2_PALETTE = [0, 0, 0, 34, 139, 34, 210, 180, 140]
S2_SPLIT = {"train": [1, 2, 3], "val": [4, 5], "test": [6]}


def _run(*args: str):
    result = CliRunner().invoke(app, ["data", "import", *map(str, args)])
    return result, " ".join(result.output.split())  # rich wraps long lines


@pytest.fixture
def s2_source(tmp_path):
    """Six Sentinel-2-like scenes as a public set ships them: EPSG:4326 uint16 GeoTIFFs (40x48 px)
    with band descriptions, palette-PNG masks of raw values 1/2 (0 in the top 3 rows: unlabelled),
    spaces in the file names, a value class table and a headed split CSV whose columns are in an
    unusual order, with extra columns and a quoted comma."""
    rng = np.random.default_rng(2)
    src = tmp_path / "s2"
    rows = ["notes,split,image,cloud_cover"]
    for split, numbers in S2_SPLIT.items():
        for i in numbers:
            image = rng.integers(1, 4000, (3, 40, 48)).astype(np.uint16)
            _geotiff(src / "images" / f"scene {i}.tif", image, descriptions=("red", "green", "blue"),
                     crs="EPSG:4326", res=1e-4, origin=(55.0 + 0.01 * i, 25.0))  # fmt: skip
            mask = rng.integers(1, 3, (40, 48)).astype(np.uint8)
            mask[:3] = 0
            _png(src / "masks" / f"scene {i}.png", mask, "P", S2_PALETTE)
            rows.append(f'"hazy, thin cirrus",{split},images/scene {i}.tif,0.{i}')
    (tmp_path / "split.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.json").write_text(
        json.dumps([{"value": 1, "name": "forest"}, {"value": 2, "name": "non-forest"}])
    )
    return src


def _s2_args(src: Path, out: Path, *extra: str) -> list:
    return [src, out, "--classes", src.parent / "classes.json", "--split", src.parent / "split.csv",
            "--chip-size", 16, *extra]  # fmt: skip


def test_raw_value_classes_palette_masks_and_a_headed_split_csv_through_the_cli(s2_source, tmp_path):
    assert Image.open(s2_source / "masks" / "scene 1.png").mode == "P"
    out = tmp_path / "out"
    result, output = _run(*_s2_args(s2_source, out))
    assert result.exit_code == 0, result.output
    assert "mask values not in the class table, imported as ignore: 0 (" in output
    info = DatasetInfo.load(out)
    assert info.classes == ("forest", "non-forest") and info.ignore_index == 255
    assert info.bands == ("red", "green", "blue") and info.crs == "EPSG:4326"
    report = yaml.safe_load((out / "dataset.yaml").read_text())["import"]
    assert report["scenes"] == {  # the header row is no scene and no split; every row landed
        split: [f"images/scene {i}.tif" for i in numbers] for split, numbers in S2_SPLIT.items()
    }
    assert report["skipped_pairs"] == []
    # rows 0, 16, 24 x cols 0, 16, 32; the 3 unlabelled rows are in the row-0 chips only
    assert report["ignored_values"]["train"] == {0: 3 * 3 * 48}
    lut = np.full(256, 255, np.uint8)
    lut[1], lut[2] = 0, 1  # raw 1 -> forest (0), raw 2 -> non-forest (1), anything else -> ignore
    for split, numbers in S2_SPLIT.items():
        ids = info.chip_ids(split)
        assert len(ids) == 9 * len(numbers)
        for chip_id in ids:
            scene = chip_id.split("_r")[0].replace("_", " ")
            r, c = (int(v) for v in chip_id.split("_r")[1].split("_c"))
            window = Window(c, r, 16, 16)
            image_path, mask_path = info.chip_paths(split, chip_id)
            with (
                rasterio.open(s2_source / "images" / f"{scene}.tif") as src,
                rasterio.open(image_path) as chip,
                rasterio.open(mask_path) as chip_mask,
            ):
                assert chip.crs == src.crs == "EPSG:4326" and chip.transform == src.window_transform(window)
                assert np.array_equal(chip.read(), src.read(window=window))
                raw = np.asarray(Image.open(s2_source / "masks" / f"{scene}.png"))[r : r + 16, c : c + 16]
                assert np.array_equal(chip_mask.read(1), lut[raw])
    # what a trial trains on: two classes, nothing outside 0, 1 and ignore
    train = load_split(SplitRef(str(out), "train", bands=("red", "green", "blue")))
    x, y = train[0]
    assert train.num_classes == 2 and x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert set(np.unique(np.concatenate([train.raw(i)[1].ravel() for i in range(len(train))]))) == {0, 1, 255}
    assert train.class_pixels().min() > 0


def test_band_names_that_differ_per_file_are_named_with_bands(s2_source, tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(1, 4000, (3, 40, 48)).astype(np.uint16)
    _geotiff(s2_source / "images" / "scene 2.tif", image, descriptions=("B04", "B03", "B02"),
             crs="EPSG:4326", res=1e-4, origin=(55.02, 25.0))  # fmt: skip
    _geotiff(s2_source / "images" / "scene 4.tif", image, crs="EPSG:4326", res=1e-4, origin=(55.04, 25.0))
    out = tmp_path / "out"
    result, output = _run(*_s2_args(s2_source, out))
    assert result.exit_code == 1
    assert "band names differ between the images (red, green, blue in images/scene 1.tif and 3 more; " in output
    assert "B04, B03, B02 in images/scene 2.tif" in output
    assert "name the bands, in the files' order, with --bands red,green,blue" in output
    assert not out.exists() and not list(tmp_path.glob(".out*"))

    result, output = _run(*_s2_args(s2_source, out, "--bands", "red,green,blue"))
    assert result.exit_code == 0, result.output
    info = DatasetInfo.load(out)
    assert info.bands == ("red", "green", "blue")
    with rasterio.open(info.chip_paths("train", "scene_2_r0_c0")[0]) as chip:
        assert chip.descriptions == ("red", "green", "blue")
    assert SegmentationDataset(out, "val", bands=["blue"])[0][0].shape == (1, 16, 16)
    wrong_count = r"(?s)2 of 2 .*has 3 bands but --bands \(bands=\) names 4: red, green, blue, nir.*Every pair is bad"
    with pytest.raises(BadPairs, match=wrong_count):
        import_dataset(s2_source, tmp_path / "o4", classes=s2_source.parent / "classes.json", chip_size=16,
                       split={"train": ["images/scene [12].tif"]}, bands=["red", "green", "blue", "nir"])  # fmt: skip


def test_every_bad_pair_in_one_error_and_skip_bad_records_them(s2_source, tmp_path):
    # scene 2 (train): the mask is 3 px taller than its image, found from the headers before any cutting
    tall = np.ones((43, 48), np.uint8)
    _png(s2_source / "masks" / "scene 2.png", tall, "P", S2_PALETTE)
    # scene 5 (val): a tiled GeoTIFF mask whose last tiles are cut off; found while cutting, after
    # the first two chip rows of the scene were written
    (s2_source / "masks" / "scene 5.png").unlink()
    cut_off = s2_source / "masks" / "scene 5.tif"
    _geotiff(cut_off, np.ones((1, 40, 48), np.uint8), crs="EPSG:4326", res=1e-4, origin=(55.05, 25.0))
    cut_off.write_bytes(cut_off.read_bytes()[:-300])
    classes, split = s2_source.parent / "classes.json", s2_source.parent / "split.csv"
    out = tmp_path / "out"
    with pytest.raises(BadPairs) as caught:
        import_dataset(s2_source, out, classes=classes, split=split, chip_size=16)
    message = str(caught.value)
    assert message.startswith("2 of 6 image/mask pairs cannot be imported:")
    assert "masks/scene 2.png: mask is 48x43 px but its image" in message
    assert "masks/scene 5.tif: unreadable" in message and "--skip-bad" in message
    assert [(p["image"], p["mask"], p["split"]) for p in caught.value.pairs] == [
        ("images/scene 2.tif", "masks/scene 2.png", "train"),
        ("images/scene 5.tif", "masks/scene 5.tif", "val"),
    ]
    assert not out.exists() and not list(tmp_path.glob(".out*"))  # nothing half-written

    result, output = _run(*_s2_args(s2_source, out, "--skip-bad"))
    assert result.exit_code == 0, result.output
    assert "skipped 2 bad pair(s) (recorded in dataset.yaml): - " in output and "scene 2.png: mask is 48x43" in output
    report = yaml.safe_load((out / "dataset.yaml").read_text())["import"]
    assert [p["image"] for p in report["skipped_pairs"]] == ["images/scene 2.tif", "images/scene 5.tif"]
    assert "48x43 px" in report["skipped_pairs"][0]["reason"]
    assert report["skipped_pairs"][1]["reason"].startswith(f"{cut_off}: unreadable")
    assert report["scenes"] == {"train": ["images/scene 1.tif", "images/scene 3.tif"],
                                "val": ["images/scene 4.tif"], "test": ["images/scene 6.tif"]}  # fmt: skip
    info = DatasetInfo.load(out)
    assert {c.split("_r")[0] for s in info.splits for c in info.chip_ids(s)} == {
        "scene_1", "scene_3", "scene_4", "scene_6"}  # fmt: skip
    assert report["chips"] == {"train": 18, "val": 9, "test": 9}  # scene 5's written chips were removed
    assert len(SegmentationDataset(out, "val")) == 9


def test_value_class_tables():
    table = ClassTable.load([{"value": [1, 3], "name": "forest"}, {"value": 2, "name": "other"},
                             {"value": 0, "ignore": True, "name": "no data"}])  # fmt: skip
    assert table.names == ("forest", "other") and table.by_value
    assert table.values == {1: 0, 3: 0, 2: 1, 0: -1}
    table = ClassTable.load([{"id": 1, "value": 7, "name": "b"}, {"id": 0, "value": 9, "name": "a"}])
    assert table.names == ("a", "b") and table.values == {9: 0, 7: 1}
    both = ClassTable.load([{"value": 1, "name": "a", "color": "#010101"}, {"color": "#000000", "ignore": True}])
    assert both.colors == {0x010101: 0, 0: -1} and both.values == {1: 0}
    for entries, error in [
        ([{"value": 1, "name": "a", "id": 0}, {"value": 2, "name": "b"}], "give every class an 'id'"),
        ([{"value": 1, "name": "a"}, {"name": "b"}], "class 'b' has no 'value'"),
        ([{"value": 1, "name": "a"}, {"value": 1, "name": "b"}], "mask value 1 is used twice"),
        ([{"value": "1", "name": "a"}], "'value' must be an integer"),
        ([{"value": 0, "ignore": True}], "no classes"),
        ([{"name": "a"}, {"ignore": True, "name": "x"}], "needs the 'value' or 'color' it ignores"),
    ]:
        with pytest.raises(DataError, match=error):
            ClassTable.load(entries)


def test_class_table_inline_json_and_errors_through_the_cli(s2_source, tmp_path):
    classes = json.dumps([{"value": 2, "name": "non-forest"}, {"value": 1, "name": "forest"}])
    args = _s2_args(s2_source, tmp_path / "out")
    args[args.index("--classes") + 1] = classes
    result, _ = _run(*args)
    assert result.exit_code == 0, result.output
    assert DatasetInfo.load(tmp_path / "out").classes == ("non-forest", "forest")
    args[args.index("--classes") + 1] = "[{"
    result, output = _run(*args)
    assert result.exit_code == 1 and "--classes is not a valid JSON list" in output


def test_a_failed_overwrite_keeps_the_old_dataset(s2_source, tmp_path):
    kw = {"classes": s2_source.parent / "classes.json", "split": s2_source.parent / "split.csv", "chip_size": 16}
    out = import_dataset(s2_source, tmp_path / "out", **kw)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    _png(s2_source / "masks" / "scene 3.png", np.ones((43, 48), np.uint8), "P", S2_PALETTE)
    with pytest.raises(BadPairs, match="1 of 6"):
        import_dataset(s2_source, out, overwrite=True, **kw)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert len(DatasetInfo.load(out).chip_ids("train")) == 27
    import_dataset(s2_source, out, overwrite=True, skip_bad=True, **kw)
    assert len(DatasetInfo.load(out).chip_ids("train")) == 18
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial or replaced folder
