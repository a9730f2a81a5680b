"""Shared fixtures: one real local Ray cluster for the session, tiny real GeoTIFF datasets, the app.

The session cluster is a real ``ray start --head`` process with the dashboard and Jobs API on
loopback (token auth on, with a token of its own), so experiments run as real Ray Jobs. The test
process is connected to it with ``ray.init`` as well, for tests that run Tune or Train directly.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
pytest_plugins = ["pg"]  # PostgreSQL server fixtures (tests/pg.py)


@pytest.fixture(scope="session")
def local_cluster():
    """A real local Ray head with 2 CPUs and a Jobs API; stopped at the end of the session."""
    from cluster.local import wait_for_jobs_api
    from cluster.local_nodes import LocalRayCluster

    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=2)
        env = cluster.client_env()
        os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"] = (
            env["RAY_AUTH_MODE"],
            env["RAY_AUTH_TOKEN"],
        )
        wait_for_jobs_api(cluster.dashboard_url)
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="session")
def ray_cluster(local_cluster):
    """The session cluster, with this test process connected to it (``ray.init``)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=local_cluster.address, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """A tiny 4-band demo dataset of 32-px GeoTIFF chips, written once per session."""
    from trainers.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("demo-data")
    return write_demo_dataset(root, chips={"train": 24, "val": 8, "test": 8}, size=32, bands=4, seed=0)
