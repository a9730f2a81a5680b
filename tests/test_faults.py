"""Faults on the local cluster: a killed driver resumes exactly; a killed worker's trial is retried; a killed
API loses nothing; cancel stops the job; the API reconciles."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.client import ApiClient, ApiError
from service.demo import ServerThread
from service.jobs import JobLauncher
from service.resume import reconcile
from service.settings import Settings
from service.store import Store

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


#: Each trial waits for its latency measurement; a short one keeps these tests to about a minute each.
_QUICK_LATENCY = {"max_seconds": 2}


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


def _trainable_pids(dashboard_url: str, submission_id: str) -> list[int]:
    """Pids of the live Tune trainable actors of one experiment's driver job (Ray state API).

    A function trainable runs in an actor of Tune's class ``ImplicitFunc``; the driver's own actors
    (the latency meter) have other classes, and the job id tells this experiment's from any other.
    """
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_actors

    ray_job_id = JobSubmissionClient(dashboard_url).get_job_info(submission_id).job_id
    actors = list_actors(address=dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000)
    return [a.pid for a in actors if a.class_name == "ImplicitFunc" and a.job_id == ray_job_id]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _serve(home: Path, port: int, ray_address: str, log: Path) -> subprocess.Popen:
    """``geonas serve`` as its own process, on the session cluster (it reconciles the store on start)."""
    env = {**os.environ, "GEONAS_HOME": str(home), "RAY_ADDRESS": ray_address, "GEONAS_AUTH": "false"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def healthy():
        assert proc.poll() is None, f"the API exited: {log.read_text()[-2000:]}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _poll(healthy, 60, every=0.2)
    return proc


_BUDGET = 2


@pytest.fixture(scope="module")
def faulted_run(local_cluster, demo_dataset, tmp_path_factory):
    """One experiment (2 trials) through a real ``geonas serve`` process, with two faults in it.

    While the first trial runs, its Ray worker process is SIGKILLed, then the API process is; the
    first trial's outcome lands in the store while the API is down; the API is started again on the
    same home (reconciling the store with the cluster first) and the experiment runs to its end. One scenario
    for the two tests below (a driver's start and its trials are most of the time), each of which
    checks its own contract.
    """
    from cluster.local import free_port

    tmp = tmp_path_factory.mktemp("faulted")
    home, port, log = tmp / "home", free_port(), tmp / "api.log"
    home.mkdir()
    api = ApiClient(f"http://127.0.0.1:{port}")
    store = Store(f"sqlite:///{(home / 'geonas.db').resolve()}")  # what the driver writes, API up or down
    stage1 = {"epochs": 2, "batch_size": 8, "early_stopping": "none", "max_failures": 1}
    run: dict = {"log": log}
    proc = _serve(home, port, local_cluster.dashboard_url, log)
    try:
        created = run["created"] = api.submit(
            _spec(demo_dataset, trials=_BUDGET, stage1=stage1, latency=_QUICK_LATENCY)
        )

        def finished() -> list[str]:
            return [t.id for t in store.list_trials(created["id"], 1) if t.state in ("completed", "pruned", "failed")]

        def first_trial_running():  # it runs for seconds (its latency is measured first): a wide window
            running = [t for t in api.trials(created["id"]) if t["state"] == "running"]
            pids = running and _trainable_pids(local_cluster.dashboard_url, created["job_id"])
            return pids and (running[0], pids)

        run["victim"], run["pids"] = _poll(first_trial_running, 300, every=0.2)
        os.kill(run["pids"][0], signal.SIGKILL)
        _poll(lambda: not _alive(run["pids"][0]), 30, every=0.1)
        run["victim_after_kill"] = {t.id: t.state for t in store.list_trials(created["id"], 1)}[run["victim"]["id"]]

        run["finished_before_api_kill"] = finished()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # What a restarting API does first, done while the job is known to run (its first trial is in
        # flight; the restart below may come after the last trial): the live job must be left alone.
        run["state_at_api_kill"] = store.get_experiment(created["id"]).state
        run["reconciled"] = reconcile(store, JobLauncher(local_cluster.dashboard_url, Settings(home=home)))
        _poll(lambda: len(finished()) > len(run["finished_before_api_kill"]), 300, every=0.2)  # lands while down

        proc = _serve(home, port, local_cluster.dashboard_url, log)
        run["state_after_restart"] = api.experiment(created["id"])["state"]
        run["final"] = _poll(
            lambda: (e := api.experiment(created["id"]))["state"] in ("completed", "failed") and e, 300
        )
        run["trials"] = [t for t in api.trials(created["id"]) if t["stage"] == 1]
        yield run
    finally:
        proc.kill()
        proc.wait(timeout=30)
        store.engine.dispose()


def test_killed_worker_trial_is_retried_or_failed_and_the_experiment_finishes(faulted_run):
    run = faulted_run
    assert len(run["pids"]) == 1  # concurrency 1: the one trainable actor is the one running the trial
    assert run["victim_after_kill"] == "running"  # the kill interrupted the trial
    final = run["final"]
    assert final["state"] == "completed", final["error"]
    assert final["trials_done"] == _BUDGET
    trials = {t["id"]: t for t in run["trials"]}
    assert sum(t["state"] in ("completed", "pruned", "failed") for t in trials.values()) == _BUDGET
    assert not [t for t in trials.values() if t["state"] in ("pending", "running")]
    killed = trials[run["victim"]["id"]]
    if killed["state"] == "failed":
        assert killed["error"], "a failed trial must say why"
    else:  # retried (FailureConfig.max_failures): every epoch reported once, none lost
        assert killed["state"] == "completed", killed
        assert [h["epoch"] for h in killed["history"]] == [1, 2]
        assert killed["epoch"] == 2 and killed["miou"] is not None


def test_killed_api_restarts_without_losing_or_duplicating_a_trial(faulted_run):
    run = faulted_run
    assert run["state_at_api_kill"] == "running" and run["reconciled"] == {}  # the live job is left alone
    assert "its driver had stopped" not in run["log"].read_text()  # also by the restarted API's own pass
    assert run["state_after_restart"] in ("running", "completed")
    final = run["final"]
    assert final["state"] == "completed", final["error"]
    assert final["trials_done"] == _BUDGET
    ids = [t["id"] for t in run["trials"]]
    assert len(ids) == len(set(ids)) == _BUDGET  # the budget, each trial once
    assert set(run["finished_before_api_kill"]) < set(ids)  # and the one that finished while it was down
    for t in run["trials"]:
        assert t["state"] in ("completed", "failed"), t
        if t["state"] == "completed":  # every epoch's result is there, each once
            assert t["miou"] is not None and [h["epoch"] for h in t["history"]] == [1, 2]
    hashes = [t["arch_hash"] for t in run["trials"]]
    assert len(set(hashes)) == len(hashes)  # no architecture trained twice
