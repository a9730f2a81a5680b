"""End to end, as a user would: submit over HTTP, the Ray Job runs the search, read the leaderboard.

Real parts throughout: the app served by uvicorn, a SQLite file, the session's local Ray cluster
(experiments run as Ray Jobs through its Jobs API), GeoTIFF chips written with rasterio.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import rasterio

from service.app import create_app
from service.client import ApiClient
from service.demo import ServerThread
from service.jobs import JobLauncher
from service.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(local_cluster, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home)
    app = create_app(settings, launcher=JobLauncher(local_cluster.dashboard_url, settings))
    with ServerThread(app) as server:
        yield ApiClient(server.url)


def wait_for(api: ApiClient, experiment_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exp = api.experiment(experiment_id)
        if exp["state"] in ("completed", "failed", "cancelled"):
            return exp
        time.sleep(2)
    raise AssertionError(f"experiment {experiment_id} still {exp['state']} after {timeout_s} s")


def test_submit_run_and_read_the_leaderboard(api, demo_dataset, tmp_path):
    spec = {
        "name": "e2e",
        "dataset": {"path": str(demo_dataset)},
        "backbone": "mobilenetv3_small_050",
        "search_space": {"num_cells": 3, "channels": 8},
        "searcher": "random",
        "budget": {"trials": 3, "concurrency": 2},
        "stage1": {"epochs": 1, "batch_size": 8},
        "latency": {"device": "cpu-1threads"},
        "stage2": {"top_k": 1, "epochs": 1},
    }
    created = api.submit(spec)
    assert created["job_id"] and created["dashboard_url"].startswith("http://127.0.0.1")
    exp = wait_for(api, created["id"])
    assert exp["state"] == "completed", exp["error"]
    assert exp["trials_done"] == 3

    trials = [t for t in api.trials(created["id"]) if t["stage"] == 1]
    assert len(trials) == 3
    assert all(t["state"] == "completed" and t["node_id"] for t in trials)
    assert len({t["arch_hash"] for t in trials}) == 3  # no architecture trained twice

    rows = [r for r in api.leaderboard(stage=1)["rows"] if r["experiment_id"] == created["id"]]
    assert len(rows) == 3
    for row in rows:
        assert 0.0 <= row["miou"] <= 1.0
        assert row["latency_ms"] > 0
        assert row["latency_device"] == "cpu-1threads"
    assert any(r["pareto"] for r in rows)

    # stage 2: the best architecture was fine-tuned with Ray Train, evaluated, exported, registered
    (model,) = api.models(created["id"])
    best = max(trials, key=lambda t: t["reward"])
    assert model["arch_hash"] == best["arch_hash"]
    assert 0.0 <= model["miou"] <= 1.0 and model["latency_ms"] > 0
    assert set(model["metrics"]["iou"]) == {"background", "building"}
    assert {"weights.safetensors", "model.onnx", "model.json"} <= set(model["artifacts"])
    assert model["metrics"]["onnx_max_abs_diff"] < 1e-3
    stage2 = [r for r in api.leaderboard(stage=2)["rows"] if r["experiment_id"] == created["id"]]
    assert [r["arch_hash"] for r in stage2] == [model["arch_hash"]]
    onnx = api.download_artifact(model["id"], "model.onnx", tmp_path / "model.onnx")
    assert onnx.stat().st_size > 1000

    # geonas predict on a scene larger than a chip keeps its georeferencing
    from typer.testing import CliRunner

    from service.cli import app

    scene = _scene(demo_dataset, tmp_path / "scene.tif")
    out = tmp_path / "pred" / "scene.tif"
    result = CliRunner().invoke(
        app,
        ["predict", model["id"], str(scene), "--out", str(out.parent), "--local", "--tile", "32", "--overlap", "8",
         "--url", api.url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        assert set(np.unique(dst.read(1))) <= {0, 1, 255}


def _scene(dataset, path):
    """Stitch four train chips into a 64×64 scene with the first chip's georeferencing."""
    chips = sorted((dataset / "train" / "images").glob("*.tif"))[:4]
    with rasterio.open(chips[0]) as first:
        profile = first.profile | {"width": 64, "height": 64}
        data = np.zeros((first.count, 64, 64), first.dtypes[0])
    for i, chip in enumerate(chips):
        with rasterio.open(chip) as src:
            r, c = divmod(i, 2)
            data[:, r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32] = src.read()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def wait_for_pretraining(api: ApiClient, job_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = api.pretraining(job_id)
        if job["state"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(2)
    raise AssertionError(f"pretraining {job_id} still {job['state']} after {timeout_s} s")


def test_csf_pretraining_gives_a_backbone_an_experiment_can_use(api, demo_dataset, tmp_path):
    from trainers.demo_data import write_demo_dataset

    # k-NN on chips of other scenes (same bands), never on the chips pretrained on
    held_out = write_demo_dataset(tmp_path / "knn", chips={"train": 12}, size=32, bands=4, seed=7)
    created = api.submit_pretraining(
        {
            "name": "csf-tiny",
            "data": {"kind": "geotiff", "path": str(demo_dataset)},
            "knn_data": {"kind": "geotiff", "path": str(held_out)},
            "knn_seeds": 2,
            "knn_metric": "cosine",
            "backbone": "mobilenetv3_small_050",
            "steps": 6,
            "batch_size": 4,
            "crop": 24,
            "warmup_steps": 2,
            "ramp_steps": 4,
            "checkpoint_every": 3,
        }
    )
    job = wait_for_pretraining(api, created["id"])
    assert job["state"] == "completed", job["error"]
    assert job["step"] == 6 and len(job["loss_curve"]) == 6
    assert set(job["knn"]) == {"random", "csf", "random_spread", "chips"}
    assert job["knn"]["chips"] == {"path": str(held_out), "count": 12, "held_out": True, "metric": "cosine"}
    spread = job["knn"]["random_spread"]["all"]["10"]["accuracy"]
    assert spread["min"] <= job["knn"]["random"]["all"]["10"]["accuracy"] <= spread["max"]
    (backbone,) = [b for b in api.backbones() if b["id"] == created["id"]]
    assert backbone["backbone"] == "mobilenetv3_small_050" and backbone["in_chans"] == 4

    exp = api.submit(
        {
            "name": "on-csf",
            "dataset": {"path": str(demo_dataset)},
            "backbone": {"csf": created["id"]},
            "search_space": {"num_cells": 2, "channels": 8},
            "searcher": "ppo",
            "latency": {"target_ms": 1000.0, "reward": "hard", "device": "cpu-1threads"},
            "budget": {"trials": 1},
            "stage1": {"epochs": 1, "batch_size": 8},
            "stage2": {"top_k": 0},
        }
    )
    done = wait_for(api, exp["id"])
    assert done["state"] == "completed", done["error"]
    (trial,) = api.trials(exp["id"])
    assert trial["state"] == "completed" and trial["arch"]["backbone"] == "mobilenetv3_small_050"
    # PPO with a hard latency target: the leaderboard carries the reward the searcher learned from
    (row,) = [r for r in api.leaderboard()["rows"] if r["experiment_id"] == exp["id"]]
    assert row["reward"] == pytest.approx(row["miou"])  # feasible under the hard target: reward = mIoU


def test_experiment_on_an_unfinished_or_mismatched_backbone_is_refused(api, demo_dataset):
    from service.client import ApiError

    with pytest.raises(ApiError, match="422.*backbone.csf"):
        api.submit({"name": "x", "dataset": {"path": str(demo_dataset)}, "backbone": {"csf": "nope"}})


def _relative_target_spec(name: str, dataset, ratio: float, relative_to: str | None, baselines: list[str]) -> dict:
    """A 3-trial random search with a hard target of ``ratio`` x a reference measured when it starts
    (``relative_to``: ``space``, or None for the spec's default, the UNet); no stage 2."""
    latency = {"device": "cpu-1threads", "reward": "hard", "target_ratio": ratio, "margin": 0, "max_seconds": 5}
    if relative_to is not None:
        latency["relative_to"] = relative_to
    return {
        "name": name,
        "dataset": {"path": str(dataset)},
        "backbone": "mobilenetv3_small_050",
        "search_space": {"num_cells": [2, 3], "channels": [8, 16]},
        "searcher": "random",
        "budget": {"trials": 3},
        "stage1": {"epochs": 1, "batch_size": 8, "early_stopping": "none"},
        "latency": latency,
        "stage2": {"top_k": 0},
        "baselines": baselines,
    }


def test_a_target_relative_to_the_space_is_the_median_of_its_draws_and_binds(api, demo_dataset):
    """`target_ratio: 1, relative_to: space`: the driver measures 8 uniform draws of the search space on
    the experiment's meter and stores their median as target_ms; stage 1 prunes by it."""
    spec = _relative_target_spec("space-target", demo_dataset, 1.0, "space", baselines=[])
    exp = wait_for(api, api.submit(spec)["id"])
    assert exp["state"] == "completed", exp["error"]
    target = exp["spec"]["latency"]["target_ms"]
    assert target > 0
    for trial in api.trials(exp["id"]):
        assert (trial["state"] == "pruned") == (trial["latency_ms"] > target)


def test_a_target_relative_to_the_unet_is_measured_by_the_meter_and_stored(api, demo_dataset):
    """`target_ratio: 0.5, relative_to: unet`: the driver measures the UNet on the experiment's meter,
    stores 0.5 x that as target_ms, and stage 1 prunes by it; the UNet trial reads the same number."""
    spec = _relative_target_spec("relative-target", demo_dataset, 0.5, None, baselines=["unet"])
    exp = wait_for(api, api.submit(spec)["id"])
    assert exp["state"] == "completed", exp["error"]
    target = exp["spec"]["latency"]["target_ms"]
    (unet,) = [t for t in api.trials(exp["id"]) if t["kind"] == "baseline"]
    assert target == pytest.approx(0.5 * unet["latency_ms"], rel=1e-3)  # the meter's cached measurement
    for trial in api.trials(exp["id"]):
        if trial["kind"] == "searched":
            assert (trial["state"] == "pruned") == (trial["latency_ms"] > target)
