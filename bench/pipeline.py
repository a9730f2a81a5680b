"""Where a stage-1 trial's wall time goes: the share spent training, and chips/s per trial.

    python bench/pipeline.py [--trials 4] [--chips 2000] [--size 64] [--epochs 3] [--out bench/results/pipeline.json]

Runs a real stage-1 experiment (the driver's ``run_experiment``: Ray Tune, the searcher adapter, the
trainable, the store callback) on a local Ray head, on generated GeoTIFF chips, then splits each
trial's wall time (first to last event the driver saw, so actor start-up and scheduling count) into
training (the optimiser loop), evaluation, latency measurement and the rest (scheduling, model build,
data loading, reporting). JSON key ``training_share`` is Σ training / Σ trial wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import stamp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument(
        "--chips", type=int, default=2000, help="training chips per trial (product default 4000)"
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--backbone", default="mobilenetv3_small_050")
    parser.add_argument("--out", default="bench/results/pipeline.json")
    args = parser.parse_args()

    from cluster.connect import connect
    from service.app import create_app
    from service.client import ApiClient
    from service.demo import ServerThread
    from service.jobs import JobLauncher
    from service.settings import Settings
    from service.store import get_store
    from trainers.demo_data import write_demo_dataset

    work = Path(tempfile.mkdtemp(prefix="geonas-bench-pipeline-"))
    data = write_demo_dataset(work / "data", chips={"train": args.chips, "val": 64, "test": 16}, size=args.size, seed=0)
    spec = {
        "name": "bench-pipeline",
        "dataset": {"path": str(data)},
        "backbone": args.backbone,
        "search_space": {"num_cells": 5, "channels": 32},
        "searcher": "random",
        "budget": {"trials": args.trials, "concurrency": 1},
        "stage1": {"epochs": args.epochs, "batch_size": 16, "early_stopping": "none"},
        "stage2": {"top_k": 0},
    }
    # the product's own path: a local head, the API, the experiment as a Ray Job
    settings = Settings(home=work / "home")
    cluster = connect(None, num_cpus=args.cpus, home=settings.home)
    try:
        app = create_app(settings, launcher=JobLauncher(cluster.dashboard_url, settings))
        with ServerThread(app) as server:
            api = ApiClient(server.url)
            started = time.perf_counter()
            created = api.submit(spec)
            while api.experiment(created["id"])["state"] not in ("completed", "failed", "cancelled"):
                time.sleep(2)
            experiment_s = time.perf_counter() - started
    finally:
        cluster.stop()
    store = get_store(settings.resolved_database_url)
    exp = store.get_experiment(created["id"])

    rows, totals = [], {"wall": 0.0, "train": 0.0, "eval": 0.0, "latency": 0.0}
    for t in store.list_trials(exp.id):
        wall = (t.updated_at - t.created_at).total_seconds()
        train = sum(h.get("train_s") or 0.0 for h in t.history)
        evaluate = sum(h.get("eval_s") or 0.0 for h in t.history)
        waited = sum(h.get("latency_s") or 0.0 for h in t.history)  # waiting for the meter's number
        throughput = [h["chips_per_s"] for h in t.history if h.get("chips_per_s")]
        rows.append(
            {
                "trial": t.id,
                "state": t.state,
                "wall_s": wall,
                "train_s": train,
                "eval_s": evaluate,
                "latency_wait_s": waited,
                "other_s": wall - train - evaluate - waited,
                "training_share": train / wall if wall else 0.0,
                "chips_per_s": sum(throughput) / len(throughput) if throughput else None,
            }
        )
        totals["wall"] += wall
        totals["train"] += train
        totals["eval"] += evaluate
        totals["latency"] += waited
    share = totals["train"] / totals["wall"] if totals["wall"] else 0.0
    chips = [r["chips_per_s"] for r in rows if r["chips_per_s"]]
    result = stamp({
        "settings": vars(args),
        "experiment_s": experiment_s,
        "training_share": share,
        "eval_share": totals["eval"] / totals["wall"] if totals["wall"] else 0.0,
        "latency_wait_share": totals["latency"] / totals["wall"] if totals["wall"] else 0.0,
        "other_share": 1 - (totals["train"] + totals["eval"] + totals["latency"]) / totals["wall"]
        if totals["wall"]
        else 0.0,
        "chips_per_s_per_trial": sum(chips) / len(chips) if chips else None,
        "trials": rows,
    })
    header = ("trial", "state", "wall s", "train s", "eval s", "lat wait s", "other s", "train %", "chips/s")
    print("{:<28} {:<10} {:>8} {:>8} {:>7} {:>10} {:>8} {:>8} {:>8}".format(*header))
    for r in rows:
        print(
            f"{r['trial']:<28} {r['state']:<10} {r['wall_s']:>8.1f} {r['train_s']:>8.1f} {r['eval_s']:>7.1f} "
            f"{r['latency_wait_s']:>10.1f} "
            f"{r['other_s']:>8.1f} {100 * r['training_share']:>7.1f}% {r['chips_per_s'] or 0:>8.1f}"
        )
    print(f"training share {100 * share:.1f} % (goal ≥ 85 %), chips/s per trial {result['chips_per_s_per_trial']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
