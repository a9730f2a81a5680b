"""Measure what can be measured on one machine about scaling a search (numbers for SCALING.md).

    python -m cluster.measure_scaling [--trials 300] [--tune-trials 100] [--out results.json]

A measurement tool, not part of the cluster package's API: it imports the searchers, the store and
the model builder lazily, inside each measurement. What it measures:

- ``searchers``: seconds per ``propose()`` and per ``observe()`` of each registered searcher over
  the default NAS-FPN token space (PPO's policy update happens inside ``observe`` once per batch),
  and the size of its saved state;
- ``store``: trial writes per second through ``service.store.Store`` on SQLite, with the write
  pattern of the experiment driver (start, one result per epoch, completion);
- ``tune``: Ray Tune's overhead per trial with a no-op trainable on a local Ray;
- ``models``: the size of a searched model's weights (what a checkpoint or export moves).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["measure_searchers", "measure_store", "measure_tune", "measure_models"]


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "median_ms": 1e3 * statistics.median(ordered),
        "p95_ms": 1e3 * ordered[int(0.95 * (len(ordered) - 1))],
        "max_ms": 1e3 * ordered[-1],
        "total_s": sum(ordered),
    }


def measure_searchers(trials: int, names: list[str] | None = None) -> dict[str, Any]:
    import numpy as np

    from search_spaces.nasfpn import NasFpnSpace
    from search_spaces.searchers import create_searcher, list_searchers

    space = NasFpnSpace()  # resnet18, 7 cells, levels 2-5: the default search space
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"space_positions": len(space.sizes)}
    for name in names or list_searchers():
        searcher = create_searcher(name, space, seed=0)
        propose_s, observe_s, late_propose_s = [], [], []
        for index in range(trials):
            started = time.perf_counter()
            proposal = searcher.propose()
            elapsed = time.perf_counter() - started
            propose_s.append(elapsed)
            if index >= trials - 50:
                late_propose_s.append(elapsed)
            if proposal is None:  # a searcher waiting for results; observe nothing this round
                continue
            started = time.perf_counter()
            searcher.observe(proposal.id, float(rng.normal()))
            observe_s.append(time.perf_counter() - started)
        results[name] = {
            "propose": _summary(propose_s),
            "propose_last_50": _summary(late_propose_s),
            "observe": _summary(observe_s),
            "state_bytes": len(searcher.state_dict()),
        }
    return results


def measure_store(url: str | None = None, trials: int = 200, epochs: int = 3) -> dict[str, Any]:
    """Writes/s through the store; ``url`` (e.g. a PostgreSQL URL), default a SQLite file."""
    from service.states import State
    from service.store import Store

    with tempfile.TemporaryDirectory() as folder:
        url = url or f"sqlite:///{folder}/bench.db"
        store = Store(url)
        experiment = store.create_experiment("bench", {"budget": {"trials": trials}})
        arch = {"cells": [{"a": 0, "b": 1, "level": 3, "op": "sum"}] * 7, "channels": 64}
        writes = 0
        started = time.perf_counter()
        for index in range(trials):
            trial_id = f"{experiment.id}-{index:05d}"
            store.record_trial(trial_id, experiment.id, state=State.RUNNING, arch=arch, arch_hash=f"{index}")
            writes += 1
            for epoch in range(1, epochs + 1):
                result = {"epoch": epoch, "miou": 0.5, "loss": 0.3, "reward": 0.4}
                store.record_trial(
                    trial_id,
                    experiment.id,
                    state=State.RUNNING,
                    history_entry=result,
                    epoch=epoch,
                    miou=0.5,
                    reward=0.4,
                    latency_ms=12.0,
                    node_id="n" * 56,
                )
                writes += 1
            store.record_trial(trial_id, experiment.id, state=State.COMPLETED, miou=0.5)
            writes += 1
        elapsed = time.perf_counter() - started
    return {
        "backend": url.split("://")[0].split("+")[0],
        "writes": writes,
        "seconds": elapsed,
        "writes_per_s": writes / elapsed,
    }


def _noop_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    for step in range(config["reports"]):
        tune.report({"reward": config["x"], "step": step})


def measure_tune(
    trials: int = 20, concurrency: int = 2, reports: int = 1, reuse_actors: bool = False
) -> dict[str, Any]:
    import ray
    from ray import tune

    ray.init(num_cpus=concurrency, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as storage:
            started = time.perf_counter()
            tuner = tune.Tuner(
                tune.with_resources(_noop_trainable, {"cpu": 1}),
                param_space={"x": tune.uniform(0, 1), "reports": reports},
                tune_config=tune.TuneConfig(
                    num_samples=trials, max_concurrent_trials=concurrency, reuse_actors=reuse_actors
                ),
                run_config=tune.RunConfig(storage_path=storage, name="noop", verbose=0),
            )
            grid = tuner.fit()
            elapsed = time.perf_counter() - started
            errors = sum(1 for result in grid if result.error)
    finally:
        ray.shutdown()
    return {
        "trials": trials,
        "concurrency": concurrency,
        "reports_per_trial": reports,
        "reuse_actors": reuse_actors,
        "errors": errors,
        "seconds": elapsed,
        "seconds_per_trial": elapsed / trials,
        "trials_per_s": trials / elapsed,
    }


def measure_models(samples: int = 5) -> dict[str, Any]:
    import numpy as np

    from search_spaces.builder import build_model
    from search_spaces.nasfpn import NasFpnSpace

    space = NasFpnSpace()
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(samples):
        model = build_model(space.sample(rng), in_chans=4, num_classes=6)
        sizes.append(sum(t.numel() * t.element_size() for t in model.state_dict().values()))
    return {"backbone": space.config.backbones[0], "weights_mb": [round(s / 2**20, 1) for s in sizes]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300, help="Proposals per searcher.")
    parser.add_argument("--tune-trials", type=int, default=20)
    parser.add_argument("--only", nargs="*", choices=["searchers", "store", "tune", "models"])
    parser.add_argument("--store-url", help="Database for the store measurement (default: SQLite file).")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    wanted = set(args.only or ["searchers", "store", "tune", "models"])
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "torch_threads": torch.get_num_threads(),
    }
    if "searchers" in wanted:
        report["searchers"] = measure_searchers(args.trials)
    if "store" in wanted:
        report["store"] = measure_store(args.store_url)
    if "models" in wanted:
        report["models"] = measure_models()
    if "tune" in wanted:
        # Tune's default starts a new worker process per trial; reusing actors skips that.
        report["tune"] = measure_tune(args.tune_trials)
        report["tune_reuse_actors"] = measure_tune(args.tune_trials, reuse_actors=True)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
