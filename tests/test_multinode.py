"""A real multi-node Ray cluster on one machine: a head and two nodes, each its own ``ray start``.

The nodes have one CPU each and a custom resource naming them, so a test can both spread work
and pin it. Drivers run in subprocesses with ``RAY_ADDRESS`` set, exactly as a Ray Job or the API
would, so this file never joins (or disturbs) the session cluster of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest

from cluster.local_nodes import LocalRayCluster

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
