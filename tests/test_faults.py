"""Faults on the local cluster: a killed driver resumes exactly; cancel stops the job; the API reconciles."""

from __future__ import annotations

import time

import pytest

from service.app import create_app
from service.client import ApiClient, ApiError
from service.demo import ServerThread
from service.jobs import JobLauncher
from service.resume import reconcile
from service.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(local_cluster, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("faults"))
    launcher = JobLauncher(local_cluster.dashboard_url, settings)
    app = create_app(settings, launcher=launcher)
    with ServerThread(app) as server:
        yield ApiClient(server.url), launcher, app.state.store


def _spec(dataset, trials: int, **kw) -> dict:
    return {
        "name": "faults",
        "dataset": {"path": str(dataset)},
        "backbone": "mobilenetv3_small_050",
        "search_space": {"num_cells": 2, "channels": 8},
        "searcher": "ppo",
        "budget": {"trials": trials, "concurrency": 1},
        "stage1": {"epochs": 2, "batch_size": 8, "early_stopping": "none"},
        "stage2": {"top_k": 0},
        **kw,
    }


def _poll(fn, timeout_s: float = 600, every: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def _stop_job(launcher: JobLauncher, job_id: str) -> None:
    launcher.stop(job_id)
    _poll(lambda: launcher.status(job_id) in ("STOPPED", "FAILED", "SUCCEEDED"), 120)


def test_killed_driver_resumes_with_exactly_the_budget_and_no_duplicates(env, demo_dataset):
    api, launcher, store = env
    created = api.submit(_spec(demo_dataset, trials=3))

    def one_done_one_running():
        trials = api.trials(created["id"])
        states = [t["state"] for t in trials]
        return "completed" in states and "running" in states

    _poll(one_done_one_running)
    in_flight = {t["arch_hash"] for t in api.trials(created["id"]) if t["state"] == "running"} - {None}
    _stop_job(launcher, created["job_id"])

    resumed = api.resume(created["id"])
    assert resumed["job_id"].endswith("-r2")
    final = _poll(lambda: (e := api.experiment(created["id"]))["state"] in ("completed", "failed") and e)
    assert final["state"] == "completed", final["error"]
    assert final["trials_done"] == 3

    trials = [t for t in api.trials(created["id"]) if t["stage"] == 1]
    finished = [t for t in trials if t["state"] in ("completed", "pruned", "failed")]
    assert len(finished) == 3
    completed = [t["arch_hash"] for t in trials if t["state"] == "completed"]
    assert len(completed) == len(set(completed))  # no architecture trained twice
    interrupted = [t for t in trials if t["state"] == "cancelled"]
    assert interrupted and all("re-run on resume" in t["error"] for t in interrupted)
    assert in_flight <= set(completed)  # the proposal in flight at the kill was trained after the resume


def test_cancel_stops_the_job_and_closes_open_trials(env, demo_dataset):
    api, launcher, _ = env
    created = api.submit(_spec(demo_dataset, trials=20))
    _poll(lambda: any(t["state"] == "running" for t in api.trials(created["id"])))
    cancelled = api.cancel(created["id"])
    assert cancelled["state"] == "cancelled"
    _poll(lambda: launcher.status(created["job_id"]) in ("STOPPED", "FAILED", "SUCCEEDED"), 120)
    assert not [t for t in api.trials(created["id"]) if t["state"] in ("pending", "running")]
    with pytest.raises(ApiError, match="409"):
        api.cancel(created["id"])


def test_reconcile_fails_an_experiment_whose_job_is_gone(env):
    _, launcher, store = env
    exp = store.create_experiment("orphan", {"budget": {"trials": 1}})
    store.update_experiment(exp.id, state="running", job_id="geonas-experiment-does-not-exist")
    assert reconcile(store, launcher) == {exp.id: "failed"}
    after = store.get_experiment(exp.id)
    assert after.state == "failed" and "gone" in after.error
