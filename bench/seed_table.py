"""Reproduce the shape of the seed result on real imagery: does a latency-constrained search beat UNet?

    python bench/seed_table.py --quick            # < 1 hour on 2 CPU cores
    python bench/seed_table.py                    # the full mode, for bigger machines

On the Dubai aerial set (``../shared/data/dubai-aerial``, split by tile), one backbone and one CPU
device profile, four models trained with the same stage-2 budget and measured the same way:

- ``unet``, ``fpn``: segmentation-models-pytorch on the same timm backbone (baselines of experiment A);
- ``nas``: the best architecture of a search without a latency target (experiment A);
- ``nas_latency``: the best feasible architecture of a search with a hard target of
  ``--target-ratio`` × the UNet's measured latency (experiment B).

Both experiments run through the product's own driver (Ray Tune stage 1, Ray Train stage 2, the
latency harness) on a local Ray head. Prints a table and writes JSON
``{"rows": [{"model", "miou", "latency_ms", ...}], ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

MODES = {
    # chips (px), stage-1 subset, stage-1 epochs, trials, stage-2 epochs
    "quick": {"chip": 128, "subset": 300, "epochs1": 2, "trials": 8, "epochs2": 4, "scale": 0.5},
    "full": {"chip": 256, "subset": 4000, "epochs1": 5, "trials": 100, "epochs2": 40, "scale": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backbone", default="mobilenetv3_large_100")
    parser.add_argument("--device", default="cpu-1threads", help="latency device profile")
    parser.add_argument("--searcher", default="ppo")
    parser.add_argument("--target-ratio", type=float, default=0.6)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--data", default=None, help="an imported Dubai dataset folder (default: import it)")
    parser.add_argument("--work", default=None)
    parser.add_argument("--out", default="bench/results/seed_table.json")
    args = parser.parse_args()
    mode = MODES["quick" if args.quick else "full"]

    import ray

    from cluster.local import wait_for_jobs_api
    from cluster.local_nodes import LocalRayCluster
    from search_spaces.baselines import create_baseline
    from search_spaces.latency import measure_latency
    from service.driver import run_experiment
    from service.specs import ExperimentSpec
    from service.store import Store
    from trainers.catalog import prepare_dataset

    work = Path(args.work or tempfile.mkdtemp(prefix="geonas-seed-"))
    started = time.perf_counter()
    data = Path(args.data) if args.data else prepare_dataset("dubai-aerial", work / "dubai", chip_size=mode["chip"])
    store = Store(f"sqlite:///{work / 'seed.db'}")
    storage = str(work / "storage")
    rows: list[dict] = []

    def spec(name: str, **kw) -> ExperimentSpec:
        return ExperimentSpec(
            name=name,
            dataset={"path": str(data)},
            backbone=args.backbone,
            search_space={"num_cells": 5, "channels": 48, "ops": ["sum", "global_attention"]},
            searcher=args.searcher,
            budget={"trials": mode["trials"], "concurrency": max(1, args.cpus // 2)},
            stage1={
                "subset": mode["subset"],
                "epochs": mode["epochs1"],
                "batch_size": 16,
                "lr": 0.002,
                "cpus_per_trial": 1,
            },
            stage2={"top_k": 1, "epochs": mode["epochs2"], "workers": 1},
            **kw,
        )

    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=args.cpus)
        env = cluster.client_env()
        os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"] = env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]
        wait_for_jobs_api(cluster.dashboard_url)  # the head answers before its GCS accepts drivers
        ray.init(address=cluster.address, log_to_driver=False)

        # the UNet's latency sets the target of experiment B, measured as every trial is
        from trainers.datasets import DatasetInfo

        info = DatasetInfo.load(data)
        unet = create_baseline("unet", args.backbone, len(info.bands), info.num_classes).eval()
        unet_ms = measure_latency(unet, (1, len(info.bands), mode["chip"], mode["chip"]), args.device).median_ms
        target = args.target_ratio * unet_ms

        a = spec("seed-nas", baselines=["unet", "fpn"], latency={"device": args.device})
        exp_a = store.create_experiment(a.name, a.model_dump(mode="json"))
        run_experiment(exp_a.id, store, storage)
        b = spec("seed-nas-latency", latency={"device": args.device, "target_ms": target, "reward": "hard"})
        exp_b = store.create_experiment(b.name, b.model_dump(mode="json"))
        run_experiment(exp_b.id, store, storage)
    finally:
        ray.shutdown()
        cluster.shutdown()

    for exp_id, searched_name in ((exp_a.id, "nas"), (exp_b.id, "nas_latency")):
        for m in store.list_models(exp_id):
            name = m.descriptor.get("baseline") if m.kind == "baseline" else searched_name
            rows.append(
                {
                    "model": name,
                    "miou": m.miou,
                    "latency_ms": m.latency_ms,
                    "pixel_accuracy": m.metrics.get("pixel_accuracy"),
                    "iou": m.metrics.get("iou"),
                    "arch_hash": m.arch_hash,
                    "params": None,
                }
            )
    order = {"unet": 0, "fpn": 1, "nas": 2, "nas_latency": 3}
    rows.sort(key=lambda r: order.get(r["model"], 9))
    unet_row = next((r for r in rows if r["model"] == "unet"), None)
    result = {
        "mode": "quick" if args.quick else "full",
        "settings": {
            **mode,
            "backbone": args.backbone,
            "device": args.device,
            "searcher": args.searcher,
            "target_ratio": args.target_ratio,
            "target_ms": target,
            "unet_ms_at_start": unet_ms,
        },
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    print(f"{'model':<12} {'test mIoU':>9} {'latency ms':>11} {'vs UNet lat':>11}")
    for r in rows:
        ratio = r["latency_ms"] / unet_row["latency_ms"] if unet_row and r["latency_ms"] else float("nan")
        print(f"{r['model']:<12} {r['miou']:>9.3f} {r['latency_ms']:>11.2f} {ratio:>10.2f}×")
    print(f"target {target:.2f} ms ({args.target_ratio} × UNet {unet_ms:.2f} ms); wall {result['wall_s'] / 60:.1f} min")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
