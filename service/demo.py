"""``geonas demo``: the whole product on one machine, with nothing configured.

Writes the demo dataset (real GeoTIFFs), starts a local Ray head (dashboard on loopback), serves the
API in this process, and submits the embedded demo experiment over REST as a user would: PPO over
cell count, channel width and cells under a hard latency target that prunes some proposals without
training them, then the top 2 and a UNet baseline fine-tuned and scored on the test split. It
follows the trials live, prints the leaderboard and the experiment's page; ``--serve`` keeps the API
and its pages up afterwards.

The target is relative, so it binds on any hardware: the median latency of 8 random architectures of
the search space, measured by the experiment's latency meter when it starts (``relative_to: space``).
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["DEMO_SPEC", "run_demo", "ServerThread"]

# Small enough for 2 CPU cores in a couple of minutes; the same spec shape a user would submit.
DEMO_SPEC: dict[str, Any] = {
    "name": "demo",
    "dataset": {"path": "<written by geonas demo>"},
    "backbone": "mobilenetv3_small_050",
    "search_space": {
        "levels": [2, 3, 4, 5],
        "num_cells": [2, 3, 4, 5],
        "channels": [8, 16, 32, 48],
        "ops": ["sum", "global_attention"],
    },
    "searcher": {"name": "ppo", "options": {"batch_size": 3}},
    "budget": {"trials": 8, "concurrency": 1},
    "latency": {"device": "cpu-1threads", "reward": "hard", "target_ratio": 1.0, "relative_to": "space", "margin": 0},
    "stage1": {"subset": 4000, "epochs": 2, "batch_size": 16, "lr": 0.003, "early_stopping": "none"},
    "stage2": {"top_k": 2, "epochs": 2},
    "baselines": ["unet"],
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


def _summary(console: Console, client, experiment_id: str) -> None:
    """What the search did, in a few lines: the target, proposals pruned by it, trained, fine-tuned."""
    lat = client.experiment(experiment_id)["spec"]["latency"]
    reference = ("the median of 8 random architectures of the search space" if lat["relative_to"] == "space"
                 else f"the {lat['relative_to'].upper()}")
    console.print(
        f"latency target: {lat['target_ms']:.2f} ms on {lat['device']} = {lat['target_ratio']} x {reference}'s "
        f"{lat['target_ms'] / lat['target_ratio']:.2f} ms, measured by the latency meter"
    )
    stage1 = [t for t in client.trials(experiment_id) if t["stage"] == 1 and t["kind"] == "searched"]
    pruned = sum(t["state"] == "pruned" for t in stage1)
    trained = sum(t["state"] == "completed" for t in stage1)
    console.print(
        f"stage 1: PPO proposed {len(stage1)} architectures; {pruned} broke the latency target "
        f"(pruned without training), {trained} trained"
        + ("" if pruned else " [yellow](the target never bound: no proposal was over it)[/yellow]")
    )
    models = client.models(experiment_id)
    if models:
        console.print(f"stage 2: {len(models)} models fine-tuned and scored on the test split:")
    for m in sorted(models, key=lambda m: -(m["miou"] or 0)):
        name = m["kind"] if m["kind"] != "searched" else f"searched {m['arch_hash'][:8]}"
        check = m["metrics"].get("latency_check") or {}
        verdict = {True: "meets the target", False: "over the target"}.get(check.get("meets_target"), "")
        console.print(
            f"  {name:<18} test mIoU {m['miou']:.3f}   latency {check.get('stage1_ms', float('nan')):.2f} ms in "
            f"stage 1, {m['latency_ms']:.2f} ms measured again: {verdict}"
        )


def run_demo(
    console: Console,
    trials: int | None = None,
    epochs: int | None = None,
    dataset: str = "demo",
    serve: bool = False,
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
    spec = copy.deepcopy(DEMO_SPEC)
    spec["dataset"]["path"] = str(data)
    if trials:
        spec["budget"]["trials"] = trials
    if epochs:
        spec["stage1"]["epochs"] = epochs
    console.print("starting Ray …")
    cluster = connect(settings.ray_address, num_cpus=settings.local_num_cpus, home=settings.home)
    console.print(f"[bold]Ray dashboard[/bold]: {cluster.dashboard_url}  ({cluster.token_note})")
    app = create_app(settings, launcher=JobLauncher(cluster.dashboard_url, settings))
    try:
        with ServerThread(app) as server:
            console.print(f"[bold]geonas API[/bold]: {server.url}  (OpenAPI docs at {server.url}/docs)")
            client = ApiClient(server.url)
            created = client.submit(spec)
            console.print(f"submitted experiment {created['id']} as Ray Job {created['job_id']}")
            final = watch_experiment(client, created["id"], console)
            if final["state"] != "completed":
                console.print(f"[red]experiment {final['state']}[/red]: {final.get('error')}")
            else:
                console.print()
                _summary(console, client, created["id"])
            console.print(leaderboard_table(client.leaderboard()))
            console.print(f"[bold]experiment page[/bold]: {server.url}/experiments/{created['id']}")
            console.print(f"demo finished in {time.monotonic() - started:.0f} s")
            if serve:
                console.print(f"serving the API and pages at {server.url} until Ctrl-C …")
                try:
                    while server.thread.is_alive():
                        time.sleep(1)
                except KeyboardInterrupt:
                    console.print("stopping")
            return final
    finally:
        cluster.stop(grace_s=5)  # the experiment has ended (or the user interrupted): nothing to drain
