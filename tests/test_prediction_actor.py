"""The prediction job's model actor, in this process (no cluster): a scene in, its outputs written.

The actor reads, predicts, blends and writes a whole scene, so its files must be the in-process
path's; a scene that cannot be read fails alone with its reason and leaves nothing behind; with
``write_on="driver"`` the blended scene comes back to be written by the driver, the same pixels; a mask
that the driver cannot see (an output folder not shared by the nodes) or cannot write fails its
scene, saying so.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import torch
from test_batch_predict import truncate, write_scene  # tests/ is on the path (see conftest's plugins)
from test_prediction_job import ARCH, BANDS, MEAN, STD  # the same small registered model

from trainers.batch_predict import ClusterOptions, ModelRecord, ScenePredictor, SceneTask, finish_scene, settle_unseen
from trainers.predict import predict_scene
from trainers.scene_output import MODEL_TAG
from trainers.scenes import plan_scenes

TAGS = {MODEL_TAG: "m1"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from search_spaces.builder import model_from_descriptor
    from trainers.export import save_weights

    torch.manual_seed(0)
    net = model_from_descriptor({"arch": ARCH}, 4, 3).eval()
    weights = save_weights(net, tmp_path_factory.mktemp("weights") / "weights.safetensors")
    record = ModelRecord("m1", {"arch": ARCH}, BANDS, ["a", "b", "c"], MEAN, STD, weights.read_bytes())
    return net, record


@pytest.fixture()
def scenes(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_scene(folder / "a.tif", 90, 120, seed=1, names=BANDS)
    write_scene(folder / "b.tif", 70, 100, seed=2)
    write_scene(tmp_path / "c-plain.tif", 200, 200, seed=3, names=BANDS)
    rasterio.shutil.copy(tmp_path / "c-plain.tif", folder / "c.tif", driver="COG")  # its header comes first
    truncate(folder / "c.tif")  # so the header reads and the pixels do not: it fails on the actor
    return folder


def _plans(folder, out):
    return plan_scenes([str(folder)], model_id="m1", model_bands=BANDS, trained_bands=None, out_dir=out, tile=32,
                       overlap=8, probabilities=True)  # fmt: skip


def _local(net, scene, out):
    probs = out / f"{scene.stem}.probs.tif"
    predict_scene(net, scene, out / scene.name, band_indexes=[1, 2, 3, 4], mean=MEAN, std=STD, num_classes=3,
                  tile=32, overlap=8, batch_size=4, probabilities=probs, tags=TAGS)  # fmt: skip
    return out / scene.name


def _same_files(a, b):
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert (x.crs, x.transform) == (y.crs, y.transform) and x.tags()[MODEL_TAG] == y.tags()[MODEL_TAG]
        assert np.array_equal(x.read(), y.read())


def test_the_actor_writes_the_in_process_paths_files_and_fails_an_unreadable_scene_alone(model, scenes, tmp_path):
    net, record = model
    plans = _plans(scenes, tmp_path / "out")
    actor = ScenePredictor(record, [SceneTask.of(p) for p in plans], batch_size=4, tags=TAGS)
    rows = [actor.scene(i) for i in range(3)]
    assert [r["error"] for r in rows[:2]] == ["", ""] and [r["windows"] for r in rows[:2]] == [20, 12]
    assert "cannot read scene" in rows[2]["error"] and "c.tif" in rows[2]["error"]
    local = tmp_path / "local"
    local.mkdir()
    for name in ("a", "b"):
        here = _local(net, scenes / f"{name}.tif", local)
        assert here.read_bytes() == (tmp_path / "out" / f"{name}.tif").read_bytes()
        _same_files(tmp_path / "out" / f"{name}.tif", here)
        probs = f"{name}.probs.tif"
        assert (local / probs).read_bytes() == (tmp_path / "out" / probs).read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.probs.tif", "a.tif", "b.probs.tif", "b.tif"]
    for plan, row in zip(plans, rows, strict=True):  # what the driver records
        finish_scene(plan, {k: np.asarray([v], dtype=object) for k, v in row.items()}, 0, record, TAGS, "workers")
    assert [p.state for p in plans] == ["completed", "completed", "failed"]


def test_written_on_the_driver_is_the_same_pixels(model, scenes, tmp_path):
    _, record = model
    on_workers = _plans(scenes, tmp_path / "workers")
    actor = ScenePredictor(record, [SceneTask.of(p) for p in on_workers], batch_size=4, tags=TAGS)
    for i in range(2):
        actor.scene(i)
    on_driver = _plans(scenes, tmp_path / "driver")
    actor = ScenePredictor(record, [SceneTask.of(p) for p in on_driver], batch_size=4, tags=TAGS, write_on="driver")
    assert not (tmp_path / "driver").exists()  # nothing written by the actor
    for i, plan in enumerate(on_driver):
        batch = actor({"scene": np.asarray([i])})
        assert batch["labels"].dtype == np.uint8 and batch["probs"].dtype == np.uint8
        finish_scene(plan, batch, 0, record, TAGS, "driver")
    assert [p.state for p in on_driver] == ["completed", "completed", "failed"]
    for name in ("a.tif", "b.tif", "a.probs.tif", "b.probs.tif"):  # the same bytes, not only the same pixels
        assert (tmp_path / "driver" / name).read_bytes() == (tmp_path / "workers" / name).read_bytes()


def test_a_mask_the_driver_cannot_see_fails_its_scene_naming_the_shared_folder(model, scenes, tmp_path):
    _, record = model
    plan = _plans(scenes, tmp_path / "elsewhere")[0]  # as if an actor had written it on another node's disk
    row = {"scene": 0, "windows": 20, "seconds": 1.0, "node": "n2", "error": ""}
    assert not finish_scene(plan, {k: np.asarray([v], dtype=object) for k, v in row.items()}, 0, record, TAGS,
                            "workers")  # fmt: skip
    unseen = {0: (plan, "n2")}
    settle_unseen(unseen, "m1")  # not seen yet: looked for again later
    assert plan.state == "running" and unseen
    settle_unseen(unseen, "m1", wait_s=0.5)
    assert plan.state == "failed" and not unseen and "node n2" in plan.error and "shared" in plan.error
    assert "write_on: driver" in plan.error
    (tmp_path / "blocked").write_text("a file where the output folder should be")
    plan = _plans(scenes, tmp_path / "blocked" / "out")[0]
    actor = ScenePredictor(record, [SceneTask.of(plan)], batch_size=4, tags=TAGS, write_on="driver")
    finish_scene(plan, actor({"scene": np.asarray([0])}), 0, record, TAGS, "driver")  # fails alone, not the job
    assert plan.state == "failed" and plan.error.startswith(f"cannot write {plan.outputs.mask}")
    with pytest.raises(ValueError, match="write_on"):
        ClusterOptions(write_on="nowhere")


def test_the_steady_rate_starts_once_every_actor_has_predicted():
    """A pool's windows/s leaves out its start-up: the second actor's model build is not steady time."""
    from service.predict_driver import _steady_rate
    from trainers.batch_predict import _note_starts, _Tally

    tally = _Tally()
    tally.add("actor-a", 0, 4, 4, 101.0)  # a's first batch, 1 s after the job began
    tally.add("actor-a", 0, 8, 4, 102.0)
    tally.add("actor-b", 1, 4, 4, 106.0)  # b's first batch: 12 windows done by all, 7 s in
    stats: dict = {}
    _note_starts(stats, tally.read()[1], wall_start=99.0, workers=2)
    assert (stats["first_batch_s"], stats["first_batch_windows"]) == (2.0, 4)
    assert (stats["all_started_s"], stats["all_started_windows"]) == (7.0, 12)
    stats |= {"seconds": 17.0, "windows": 52}
    assert _steady_rate(stats) == 4.0  # (52 - 12) windows in (17 - 7) s
    one = {"first_batch_s": 2.0, "first_batch_windows": 4, "seconds": 17.0, "windows": 52}
    assert _steady_rate(one) == 3.2  # before every actor had started: from the first batch
