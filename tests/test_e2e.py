"""End to end, as a user would: submit over HTTP, the Ray Job runs the search, read the leaderboard.

Real parts throughout: the app served by uvicorn, a SQLite file, the session's local Ray cluster
(experiments run as Ray Jobs through its Jobs API), GeoTIFF chips written with rasterio.
"""

from __future__ import annotations

import time

import pytest

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


def test_submit_run_and_read_the_leaderboard(api, demo_dataset):
    spec = {
        "name": "e2e",
        "dataset": {"path": str(demo_dataset)},
        "backbone": "mobilenetv3_small_050",
        "search_space": {"num_cells": 3, "channels": 8},
        "searcher": "random",
        "budget": {"trials": 3, "concurrency": 2},
        "stage1": {"epochs": 1, "batch_size": 8},
        "latency": {"device": "cpu-1threads"},
        "stage2": {"top_k": 0},
    }
    created = api.submit(spec)
    assert created["job_id"] and created["dashboard_url"].startswith("http://127.0.0.1")
    exp = wait_for(api, created["id"])
    assert exp["state"] == "completed", exp["error"]
    assert exp["trials_done"] == 3

    trials = api.trials(created["id"])
    assert len(trials) == 3
    assert all(t["state"] == "completed" and t["node_id"] for t in trials)
    assert len({t["arch_hash"] for t in trials}) == 3  # no architecture trained twice

    rows = [r for r in api.leaderboard()["rows"] if r["experiment_id"] == created["id"]]
    assert len(rows) == 3
    for row in rows:
        assert 0.0 <= row["miou"] <= 1.0
        assert row["latency_ms"] > 0
        assert row["latency_device"] == "cpu-1threads"
    assert any(r["pareto"] for r in rows)
