"""A real multi-node Ray cluster on one machine: a head and two nodes, each its own ``ray start``.

The nodes have one CPU each and a custom resource naming them, so a test can both spread work
and pin it. Drivers run in subprocesses with ``RAY_ADDRESS`` set, exactly as a Ray Job or the API
would, so this file never joins (or disturbs) the session cluster of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest

from cluster.local_nodes import LocalRayCluster, free_port

NODE_NAMES = ("head", "w1", "w2")


@pytest.fixture(scope="module")
def multinode(tmp_path_factory):
    cluster = LocalRayCluster(root=tmp_path_factory.mktemp("multinode"))
    try:
        cluster.start_head(num_cpus=1, resources={"node_head": 1})
        for name in NODE_NAMES[1:]:
            cluster.add_node(name, num_cpus=1, resources={f"node_{name}": 1})
        yield cluster
    finally:
        cluster.shutdown()


def run_driver(cluster: LocalRayCluster, code: str, timeout_s: float = 120) -> dict:
    """Run a driver script against the cluster; it prints one JSON object as its last line."""
    env = {**_base_env(), **cluster.client_env()}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"driver failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _base_env() -> dict[str, str]:
    # No RAY_* from the caller: the driver must reach this cluster and no other.
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


SPREAD_DRIVER = """
import json, time, ray
ray.init(log_to_driver=False)  # RAY_ADDRESS from the environment: joins, never starts one

deadline = time.monotonic() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.monotonic() < deadline:
    time.sleep(0.5)
nodes = {n["NodeID"]: sorted(k for k in n["Resources"] if k.startswith("node_"))
         for n in ray.nodes() if n["Alive"]}

@ray.remote(num_cpus=1)
def where(seconds):
    time.sleep(seconds)  # hold the CPU so the next task must go to another node
    return ray.get_runtime_context().get_node_id()

spread = ray.get([where.remote(1.0) for _ in range(6)])
pinned = {name: ray.get(where.options(resources={f"node_{name}": 0.01}).remote(0))
          for name in ("head", "w1", "w2")}
print(json.dumps({"nodes": nodes, "spread": spread, "pinned": pinned}))
"""


def test_three_separate_nodes_join(multinode):
    assert all(node.alive for node in multinode.nodes)
    result = run_driver(multinode, SPREAD_DRIVER)
    assert len(result["nodes"]) == 3, result["nodes"]
    # Each node carries only its own custom resource: they are separate raylets, not one.
    assert sorted(sum(result["nodes"].values(), [])) == ["node_head", "node_w1", "node_w2"]


def test_tasks_land_on_more_than_one_node(multinode):
    result = run_driver(multinode, SPREAD_DRIVER)
    node_ids = set(result["nodes"])
    assert set(result["spread"]) <= node_ids
    # Six one-CPU tasks on three one-CPU nodes: one node alone cannot have run them in time.
    assert len(set(result["spread"])) >= 2, result["spread"]
    # A task pinned by a node's custom resource runs on that node, and the three differ.
    assert len(set(result["pinned"].values())) == 3
    for name, node_id in result["pinned"].items():
        assert result["nodes"][node_id] == [f"node_{name}"]


def test_dashboard_refuses_requests_without_the_token(multinode):
    url = f"{multinode.dashboard_url}/api/version"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {multinode.auth_token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.loads(answer.read())["ray_version"]


def test_node_ids_are_read_from_the_dashboard(multinode):
    ids = multinode.node_ids()
    assert sorted(ids) == sorted(NODE_NAMES)
    assert len(set(ids.values())) == 3


# --- experiments through the API (slow: a Ray Job, Tune, real training on 32 px chips) --------

TERMINAL = {"completed", "failed", "cancelled"}


def experiment_spec(dataset: Path, name: str, trials: int, epochs: int) -> dict:
    return {
        "name": name,
        "dataset": {"path": str(dataset)},
        "backbone": "mobilenetv3_small_050",
        "search_space": {"levels": [2, 3, 4, 5], "num_cells": 2, "channels": 8, "ops": ["sum"]},
        "searcher": {"name": "random"},
        # One trial per node at a time: each trial asks for 1 CPU and each node has 1.
        "budget": {"trials": trials, "concurrency": 3},
        "latency": {"device": "cpu-1threads", "reward": "soft", "target_ms": 50.0},
        # No early stopping: every trial runs all its epochs (ASHA would prune some).
        "stage1": {"subset": 16, "epochs": epochs, "batch_size": 8, "lr": 0.003, "early_stopping": "none"},
        "stage2": {"top_k": 0},
        "seed": 0,
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from trainers.demo_data import write_demo_dataset

    folder = tmp_path_factory.mktemp("multinode-data") / "demo"
    return write_demo_dataset(folder, chips={"train": 16, "val": 8, "test": 4}, size=32, seed=0)


@pytest.fixture(scope="module")
def api(multinode, tmp_path_factory):
    """`geonas serve` in its own process, pointed at the multi-node cluster by RAY_ADDRESS alone."""
    home = tmp_path_factory.mktemp("multinode-api")
    port = free_port()
    env = {k: v for k, v in _base_env().items() if not k.startswith("GEONAS_")}
    env.update(multinode.client_env())
    # The dashboard's URL: the Jobs API is on its own random port here, not 8265 of the GCS host.
    env.update(
        RAY_ADDRESS=multinode.dashboard_url,
        GEONAS_HOME=str(home),
        GEONAS_API_HOST="127.0.0.1",
        GEONAS_API_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    geonas = str(Path(sys.executable).with_name("geonas"))
    # Auth is on for an API pointed at a cluster: a user token, made the way an operator does.
    made = subprocess.run(
        [geonas, "token", "create", "--name", "multinode"], cwd=home, env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    token = made.stdout.strip().splitlines()[-1]
    log = home / "api.log"
    with open(log, "wb") as out:
        # cwd=home: no .env of the repository is read.
        process = subprocess.Popen(
            [geonas, "serve"],
            cwd=home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, f"geonas serve exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"geonas serve did not answer:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)


def submit(api: httpx.Client, spec: dict) -> dict:
    answer = api.post("/v1/experiments", json=spec)
    assert answer.status_code == 201, answer.text
    return answer.json()


def wait_until_done(api: httpx.Client, cluster: LocalRayCluster, created: dict, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        experiment = api.get(f"/v1/experiments/{created['id']}").json()
        if experiment["state"] in TERMINAL:
            return experiment
        time.sleep(2)
    raise AssertionError(f"experiment not done in {timeout_s:.0f} s:\n{driver_log(cluster, created)}")


def driver_log(cluster: LocalRayCluster, created: dict) -> str:
    logs = cluster.temp_dir / "session_latest" / "logs"
    path = logs / f"job-driver-{created['job_id']}.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else f"(no {path})"


def trials_of(api: httpx.Client, created: dict) -> list[dict]:
    return api.get(f"/v1/experiments/{created['id']}/trials").json()


@pytest.mark.slow
def test_experiment_through_the_api_runs_trials_on_several_nodes(multinode, api, dataset):
    node_ids = multinode.node_ids()
    created = submit(api, experiment_spec(dataset, "multinode", trials=3, epochs=1))
    experiment = wait_until_done(api, multinode, created, timeout_s=600)
    assert experiment["state"] == "completed", f"{experiment['error']}\n{driver_log(multinode, created)}"
    trials = trials_of(api, created)
    assert len(trials) == 3 and {t["state"] for t in trials} == {"completed"}
    ran_on = {t["node_id"] for t in trials}
    assert ran_on <= set(node_ids.values()), (ran_on, node_ids)
    # Three one-CPU trials at once on three one-CPU nodes: they cannot all share one node.
    assert len(ran_on) >= 2, ran_on


EPOCHS_NODE_LOSS = 40


@pytest.mark.slow
def test_experiment_survives_losing_a_worker_node(multinode, api, dataset):
    """Lose node w1 while a trial runs there: that trial is retried elsewhere, the experiment ends.

    The node is killed, not stopped: a graceful stop drains it and lets the trial finish there.
    """
    node_ids = multinode.node_ids()
    victim = next(node for node in multinode.nodes if node.name == "w1")
    # many short epochs: a trial lasts long enough to be caught running on w1, whatever the machine's load
    created = submit(api, experiment_spec(dataset, "node-loss", trials=3, epochs=EPOCHS_NODE_LOSS))
    deadline = time.monotonic() + 600
    lost = None
    while lost is None:
        assert time.monotonic() < deadline, f"no trial ran on w1:\n{driver_log(multinode, created)}"
        running = [t for t in trials_of(api, created) if t["state"] == "running"]
        # early in its run, so the kill lands before the trial can finish there
        lost = next((t for t in running if t["node_id"] == node_ids["w1"] and t["epoch"] < EPOCHS_NODE_LOSS // 2), None)
        time.sleep(0.5)
    multinode.kill_node(victim)
    assert not victim.alive

    experiment = wait_until_done(api, multinode, created, timeout_s=600)
    assert experiment["state"] == "completed", f"{experiment['error']}\n{driver_log(multinode, created)}"
    trials = {t["id"]: t for t in trials_of(api, created)}
    assert {t["state"] for t in trials.values()} == {"completed"}, trials
    # The interrupted trial finished, and its last results came from a node that survived.
    retried = trials[lost["id"]]
    summary = {k: retried[k] for k in ("id", "state", "epoch", "node_id", "error")}
    assert retried["node_id"] in set(node_ids.values()) - {node_ids["w1"]}, (summary, node_ids)
    assert retried["epoch"] == EPOCHS_NODE_LOSS, summary
