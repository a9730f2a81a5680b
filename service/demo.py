"""``geonas demo``: the whole product on one machine, with nothing configured.

Writes the demo dataset (real GeoTIFFs), starts a local Ray head (dashboard on loopback), serves the
API in this process, submits the embedded demo experiment over REST, follows its trials live and
prints the leaderboard.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["DEMO_SPEC", "run_demo", "ServerThread"]

# Small enough for 2 CPU cores in a few minutes; the same spec shape a user would submit.
DEMO_SPEC: dict[str, Any] = {
    "name": "demo",
    "dataset": {"path": "<written by geonas demo>"},
    "backbone": "mobilenetv3_small_050",
    "search_space": {
        "levels": [2, 3, 4, 5],
        "num_cells": 5,
        "channels": 32,
        "ops": ["sum", "global_attention"],
    },
    "searcher": {"name": "random"},
    "budget": {"trials": 6, "concurrency": 1},
    "latency": {"device": "cpu-1threads", "reward": "soft", "target_ms": 15.0},
    "stage1": {"subset": 4000, "epochs": 2, "batch_size": 16, "lr": 0.003},
    "stage2": {"top_k": 0},
    "seed": 0,
}


class ServerThread:
    """uvicorn serving an app from a background thread (for the demo and the tests)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        from cluster.local import free_port

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://{host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


DEMO_DATASETS = {
    # name -> options for trainers.catalog.prepare_dataset
    "demo": {"size": 64, "seed": 0},
    "dubai-aerial": {"chip_size": 128},
}


def ensure_demo_data(home: Path, name: str = "demo") -> Path:
    """The named demo dataset under ``home``, written (or imported) on first use."""
    from search_spaces.errors import SpecError
    from trainers.catalog import prepare_dataset

    if name not in DEMO_DATASETS:
        raise SpecError(f"unknown demo dataset {name!r}; choose one of {', '.join(DEMO_DATASETS)}", "dataset")
    return prepare_dataset(name, home / f"{name}-data", **DEMO_DATASETS[name])


def run_demo(
    console: Console, trials: int | None = None, epochs: int | None = None, dataset: str = "demo"
) -> dict[str, Any]:
    from cluster.connect import connect

    from .app import create_app
    from .client import ApiClient
    from .jobs import JobLauncher
    from .render import leaderboard_table
    from .settings import get_settings
    from .watch import watch_experiment

    settings = get_settings()
    started = time.monotonic()
    data = ensure_demo_data(settings.home.resolve(), dataset)
    console.print(f"[bold]demo dataset[/bold]: {data}")
    console.print("starting Ray …")
    cluster = connect(settings.ray_address, num_cpus=settings.local_num_cpus, home=settings.home)
    console.print(f"[bold]Ray dashboard[/bold]: {cluster.dashboard_url}  ({cluster.token_note})")
    app = create_app(settings, launcher=JobLauncher(cluster.dashboard_url, settings))
    spec = copy.deepcopy(DEMO_SPEC)
    spec["dataset"]["path"] = str(data)
    if trials:
        spec["budget"]["trials"] = trials
    if epochs:
        spec["stage1"]["epochs"] = epochs
    try:
        with ServerThread(app) as server:
            console.print(f"[bold]geonas API[/bold]: {server.url}  (OpenAPI docs at {server.url}/docs)")
            client = ApiClient(server.url)
            created = client.submit(spec)
            console.print(f"submitted experiment {created['id']} as Ray Job {created['job_id']}")
            final = watch_experiment(client, created["id"], console)
            if final["state"] != "completed":
                console.print(f"[red]experiment {final['state']}[/red]: {final.get('error')}")
            console.print(leaderboard_table(client.leaderboard()))
            console.print(f"demo finished in {time.monotonic() - started:.0f} s")
            return final
    finally:
        cluster.stop()
