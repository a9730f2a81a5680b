"""Batch prediction as a Ray Job on the session's local cluster, through the real app and a real SQLite file.

Three generated scenes, one of them unreadable past its header: the job writes the two good scenes as
COGs whose CRS, transform and pixels equal the in-process path's (written by the model actors, or by
the driver with ``write_on: driver``), names the bad one with its reason, and a resumed job skips what
it finished. A job cancelled while it runs ends cancelled with no half-written scene reported complete.
A scene of other bands is refused with a 422 before any work.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import rasterio
import torch
from fastapi.testclient import TestClient
from test_batch_predict import truncate, write_scene  # tests/ is on the path (see conftest's plugins)

from service.app import create_app
from service.jobs import JobLauncher
from service.settings import Settings
from trainers.predict import predict_scene
from trainers.scene_output import MODEL_TAG, SceneOutputs, is_complete

pytestmark = pytest.mark.slow

ARCH = {
    "backbone": "mobilenetv3_small_050",
    "levels": [2, 3, 4, 5],
    "channels": 8,
    "cells": [[0, 1, 3, "sum"], [2, 4, 4, "global_attention"]],
}
BANDS = ["blue", "green", "red", "nir"]
MEAN, STD = [1500.0] * 4, [800.0] * 4


def register_model(store, root):
    """A real (untrained) searched network, saved and registered as stage 2 would."""
    from search_spaces.builder import model_from_descriptor
    from trainers.export import save_weights

    torch.manual_seed(0)
    net = model_from_descriptor({"arch": ARCH}, 4, 3).eval()
    weights = save_weights(net, root / "weights.safetensors")
    exp = store.create_experiment("predict", {})
    model = store.register_model(
        exp.id, trial_id=f"{exp.id}-s2", descriptor={"arch": ARCH}, miou=0.5,
        data={"bands": BANDS, "classes": ["a", "b", "c"], "mean": MEAN, "std": STD},
        artifacts={"weights.safetensors": str(weights)},
    )  # fmt: skip
    return model, net


@pytest.fixture(scope="module")
def site(local_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("prediction-job")
    settings = Settings(home=root / "home", auth=False)
    app = create_app(settings, launcher=JobLauncher(local_cluster.dashboard_url, settings))
    model, net = register_model(app.state.store, root)
    scenes = root / "scenes"
    scenes.mkdir()
    write_scene(scenes / "a.tif", 90, 120, seed=1, names=BANDS)
    write_scene(scenes / "b.tif", 70, 100, seed=2)  # no band names: read in the model's band count
    truncate(write_scene(scenes / "c.tif", 200, 200, seed=3, names=BANDS))
    with TestClient(app) as client:
        yield {"client": client, "model": model, "net": net, "scenes": scenes, "root": root}


def wait_for(client, prediction_id, timeout_s=420):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/predictions/{prediction_id}").json()
        if job["state"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(2)
    raise AssertionError(f"prediction {prediction_id} still {job['state']} after {timeout_s} s: {job}")


def test_prediction_job_matches_the_in_process_path_names_the_bad_scene_and_resumes(site):
    client, scenes, out = site["client"], site["scenes"], site["root"] / "out"
    spec = {"model_id": site["model"].id, "scenes": [str(scenes)], "out": str(out), "tile": 32, "overlap": 8,
            "batch_size": 4, "probabilities": True}  # fmt: skip
    created = client.post("/v1/predictions", json=spec)
    assert created.status_code == 201, created.text
    assert created.json()["dashboard_url"].startswith("http://127.0.0.1")
    job = wait_for(client, created.json()["id"])
    assert job["state"] == "completed", job["error"]
    by_name = {r["scene"].rsplit("/", 1)[-1]: r for r in job["scenes"]}
    assert {n: r["state"] for n, r in by_name.items()} == {
        "a.tif": "completed",
        "b.tif": "completed",
        "c.tif": "failed",
    }
    assert "c.tif" in by_name["c.tif"]["error"] and "cannot read" in by_name["c.tif"]["error"]
    progress = job["progress"]
    assert (progress["scenes_total"], progress["scenes_done"], progress["scenes_failed"]) == (3, 2, 1)
    assert progress["windows_done"] == progress["windows_total"] > 0 and progress["windows_per_s"] > 0

    for name, bands in (("a", [1, 2, 3, 4]), ("b", [1, 2, 3, 4])):
        local = site["root"] / f"local-{name}.tif"
        predict_scene(site["net"], scenes / f"{name}.tif", local, band_indexes=bands, mean=MEAN, std=STD,
                      num_classes=3, tile=32, overlap=8, batch_size=4)  # fmt: skip
        with rasterio.open(out / f"{name}.tif") as job_out, rasterio.open(local) as here:
            assert job_out.crs == here.crs and job_out.transform == here.transform
            assert np.array_equal(job_out.read(), here.read())
            assert job_out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        with rasterio.open(out / f"{name}.probs.tif") as probs:
            assert probs.count == 3
    assert not (out / "c.tif").exists() and not list(out.glob(".*"))  # nothing half-written
    with rasterio.open(job["mosaic"]) as mosaic:
        assert mosaic.crs.to_epsg() == 32640

    page = client.get(f"/predictions/{job['id']}")
    assert page.status_code == 200 and "prediction" in page.text

    # resumed: the finished scenes are skipped (their files untouched), the bad one is tried again
    before = {n: (out / f"{n}.tif").stat().st_mtime_ns for n in ("a", "b")}
    resumed = client.post(f"/v1/predictions/{job['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    again = wait_for(client, job["id"])
    assert again["state"] == "completed", again["error"]
    states = {r["scene"].rsplit("/", 1)[-1]: r["state"] for r in again["scenes"]}
    assert states == {"a.tif": "skipped", "b.tif": "skipped", "c.tif": "failed"}
    assert {n: (out / f"{n}.tif").stat().st_mtime_ns for n in ("a", "b")} == before
    assert again["progress"]["scenes_skipped"] == 2


def test_written_on_the_driver_the_job_gives_the_in_process_paths_bytes(site):
    """``write_on: driver`` (no shared folder): actors send each blended scene to the driver to write."""
    client, scenes, out = site["client"], site["scenes"], site["root"] / "out-driver"
    spec = {"model_id": site["model"].id, "scenes": [str(scenes)], "out": str(out), "tile": 32, "overlap": 8,
            "batch_size": 4, "probabilities": True, "write_on": "driver"}  # fmt: skip
    created = client.post("/v1/predictions", json=spec)
    assert created.status_code == 201, created.text
    job = wait_for(client, created.json()["id"])
    assert job["state"] == "completed", job["error"]
    assert [r["state"] for r in job["scenes"]] == ["completed", "completed", "failed"]
    assert job["progress"]["write_on"] == "driver"
    local = site["root"] / "local-driver"
    for name in ("a", "b"):
        predict_scene(site["net"], scenes / f"{name}.tif", local / f"{name}.tif", band_indexes=[1, 2, 3, 4],
                      mean=MEAN, std=STD, num_classes=3, tile=32, overlap=8, batch_size=4,
                      probabilities=local / f"{name}.probs.tif", tags={MODEL_TAG: site["model"].id})  # fmt: skip
        for file in (f"{name}.tif", f"{name}.probs.tif"):
            assert (out / file).read_bytes() == (local / file).read_bytes()


def test_cancelling_a_running_job_stops_it_and_reports_no_half_written_scene(site, local_cluster):
    """POST cancel while the actor is inside the scenes: the job ends cancelled, every scene reported
    complete is complete on disk, and a resumed job finishes the rest, skipping those."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client, root = site["client"], site["root"]
    scenes, out = root / "many", root / "out-cancel"
    scenes.mkdir()
    for i in range(8):
        write_scene(scenes / f"s{i}.tif", 320, 320, seed=10 + i, names=BANDS, x0=300000.0 + 160 * i)
    spec = {"model_id": site["model"].id, "scenes": [str(scenes)], "out": str(out), "tile": 32, "overlap": 8,
            "batch_size": 2, "workers": 1}  # fmt: skip
    created = client.post("/v1/predictions", json=spec).json()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # running, with windows predicted: the actor is inside a scene
        job = client.get(f"/v1/predictions/{created['id']}").json()
        if job["state"] != "pending" and (job["progress"].get("windows_done") or 0) > 0:
            break
        assert job["state"] in ("pending", "running"), job
        time.sleep(0.3)
    cancelled = client.post(f"/v1/predictions/{created['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    jobs = JobSubmissionClient(local_cluster.dashboard_url)
    deadline = time.monotonic() + 60
    while jobs.get_job_status(created["job_id"]) not in (JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED):
        assert time.monotonic() < deadline, "the Ray job did not stop"
        time.sleep(0.5)
    time.sleep(3)  # the driver's actors go with it
    job = client.get(f"/v1/predictions/{created['id']}").json()
    assert job["state"] == "cancelled" and job["error"] == "cancelled by user"
    profile = {"height": 320, "width": 320, "crs": rasterio.crs.CRS.from_epsg(32640)}
    done = set()
    for name in sorted(p.name for p in out.glob("s*.tif")):  # a mask under its final name is a whole scene
        with rasterio.open(scenes / name) as src:
            assert is_complete(SceneOutputs(out / name, None), profile | {"transform": src.transform}, job["model_id"])
        done.add(name)
    reported = {r["scene"].rsplit("/", 1)[-1] for r in job["scenes"] if r["state"] == "completed"}
    assert reported <= done and len(done) < 8, (reported, done)  # stopped part-way; nothing reported unwritten

    resumed = client.post(f"/v1/predictions/{created['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    again = wait_for(client, created["id"])
    assert again["state"] == "completed", again["error"]
    states = {r["scene"].rsplit("/", 1)[-1]: r["state"] for r in again["scenes"]}
    assert {n for n, s in states.items() if s == "skipped"} == done
    assert {n for n, s in states.items() if s == "completed"} == {f"s{i}.tif" for i in range(8)} - done
    assert not list(out.glob(".*"))  # what the stopped actor left half-written was redone and cleared


@pytest.fixture()
def door(tmp_path):
    """The app with no cluster: a 422 must come before any submission is attempted."""
    app = create_app(Settings(home=tmp_path / "home", auth=False))
    model, _ = register_model(app.state.store, tmp_path)
    with TestClient(app) as client:
        yield client, model


def _fields(response):
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


def test_band_mismatch_is_a_422_naming_the_scene_and_stores_nothing(door, tmp_path):
    client, model = door
    write_scene(tmp_path / "ok.tif", names=BANDS)
    write_scene(tmp_path / "rgb.tif", bands=3, names=BANDS[:3])
    write_scene(tmp_path / "other.tif", names=["b1", "b2", "b3", "b4"])
    for bad in ("rgb.tif", "other.tif"):
        spec = {
            "model_id": model.id,
            "scenes": [str(tmp_path / "ok.tif"), str(tmp_path / bad)],
            "out": str(tmp_path / "o"),
        }
        response = client.post("/v1/predictions", json=spec)
        assert response.status_code == 422, response.text
        assert _fields(response) == ["body.scenes.1"] and bad in response.text and "needs 4" in response.text
    spec = {"model_id": "nope", "scenes": [str(tmp_path / "ok.tif")], "out": str(tmp_path / "o")}
    assert _fields(client.post("/v1/predictions", json=spec)) == ["body.model_id"]
    spec = {"model_id": model.id, "scenes": [str(tmp_path / "ok.tif")], "out": str(tmp_path / "o"), "overlap": 20,
            "tile": 32}  # fmt: skip
    assert _fields(client.post("/v1/predictions", json=spec)) == ["body.overlap"]
    assert client.get("/v1/predictions").json() == []


def test_cli_local_path_writes_the_same_outputs_and_names_the_bad_scene(tmp_path, monkeypatch):
    """``geonas predict MODEL SCENES --out DIR --local``: in this process, same plan, files and mosaic."""
    from typer.testing import CliRunner

    from service import predict_cli
    from service.cli import app as cli
    from service.demo import ServerThread

    monkeypatch.setattr(predict_cli, "CACHE", tmp_path / "cache")  # a fresh download of the weights
    api = create_app(Settings(home=tmp_path / "home", auth=False))
    model, net = register_model(api.state.store, tmp_path)
    (tmp_path / "s").mkdir()
    write_scene(tmp_path / "s" / "a.tif", 40, 50, names=BANDS)
    truncate(write_scene(tmp_path / "s" / "z.tif", 200, 200, names=BANDS))
    out = tmp_path / "out"
    with ServerThread(api) as server:
        args = ["predict", model.id, str(tmp_path / "s" / "*.tif"), "--out", str(out), "--local", "--tile", "32",
                "--overlap", "8", "--url", server.url]  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "failed" in result.output and "z.tif" in result.output
        again = CliRunner().invoke(cli, args)
        assert "skipped" in again.output
    local = tmp_path / "direct.tif"
    predict_scene(net, tmp_path / "s" / "a.tif", local, band_indexes=[1, 2, 3, 4], mean=MEAN, std=STD,
                  num_classes=3, tile=32, overlap=8)  # fmt: skip
    with rasterio.open(out / "a.tif") as cli_out, rasterio.open(local) as direct:
        assert np.array_equal(cli_out.read(), direct.read()) and cli_out.transform == direct.transform
    assert (out / "mosaic.vrt").is_file() and not (out / "z.tif").exists()


def test_prediction_page_and_index_show_progress_scenes_and_the_dashboard(tmp_path):
    """The page in a real browser (the OS's Chromium), over a job's record as the driver writes it."""
    import shutil

    from service.demo import ServerThread

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium on PATH: install the OS package (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    api = create_app(Settings(home=tmp_path / "home", auth=False))
    store = api.state.store
    model, _ = register_model(store, tmp_path)
    job = store.create_prediction("region", model.id, {"out": "/data/out", "scenes": ["/data/scenes"]})
    store.update_prediction(job.id, job_id="geonas-prediction-x", dashboard_url="http://127.0.0.1:8265/#/jobs/x")
    progress = {
        "scenes_total": 3, "scenes_done": 1, "scenes_skipped": 0, "scenes_failed": 1, "windows_total": 40,
        "windows_done": 25, "windows_per_s": 12.5, "actors": 2, "gpus_per_actor": 0.0, "nodes": {"n1": 25},
    }  # fmt: skip
    scenes = [
        {"scene": "/data/scenes/a.tif", "state": "completed", "output": "/data/out/a.tif", "windows": 20,
         "error": None},
        {"scene": "/data/scenes/c.tif", "state": "failed", "output": "/data/out/c.tif", "windows": 0,
         "error": "cannot read scene /data/scenes/c.tif"},
    ]  # fmt: skip
    store.update_prediction(job.id, state="running", progress=progress, scenes=scenes)
    with ServerThread(api) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/predictions/{job.id}")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        summary = page.locator("#summary").inner_text()
        assert "running" in summary and "1 / 3" in summary and "12.5" in summary and "25 / 40" in summary
        assert page.locator("#summary a[href='http://127.0.0.1:8265/#/jobs/x']").count() == 1
        rows = page.locator("#scenes-table tbody tr")
        assert rows.count() == 2 and "cannot read scene" in rows.nth(1).inner_text()
        page.goto(f"{server.url}/")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        assert page.locator("#predictions-table tbody tr").count() == 1
        browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
