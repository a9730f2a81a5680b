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
    # chips (px), stage-1 train / val subsets, stage-1 epochs, trials, stage-2 epochs
    "quick": {"chip": 128, "subset": 300, "val_subset": 300, "epochs1": 2, "trials": 8, "epochs2": 2},
    "full": {"chip": 256, "subset": 4000, "val_subset": 1000, "epochs1": 5, "trials": 100, "epochs2": 40},
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

    from cluster.connect import connect
    from search_spaces.baselines import create_baseline
    from search_spaces.latency import measure_latency
    from service.app import create_app
    from service.client import ApiClient
    from service.demo import ServerThread
    from service.jobs import JobLauncher
    from service.settings import Settings
    from service.store import get_store
    from trainers.catalog import prepare_dataset
    from trainers.datasets import DatasetInfo

    work = Path(args.work or tempfile.mkdtemp(prefix="geonas-seed-"))
    started = time.perf_counter()
    data = Path(args.data) if args.data else prepare_dataset("dubai-aerial", work / "dubai", chip_size=mode["chip"])
    rows: list[dict] = []

    def spec(name: str, **kw) -> dict:
        return {
            "name": name,
            "dataset": {"path": str(data)},
            "backbone": args.backbone,
            "search_space": {"num_cells": 5, "channels": 48, "ops": ["sum", "global_attention"]},
            "searcher": args.searcher,
            "budget": {"trials": mode["trials"], "concurrency": max(1, args.cpus // 2)},
            "stage1": {
                "subset": mode["subset"],
                "val_subset": mode["val_subset"],
                "epochs": mode["epochs1"],
                "batch_size": 16,
                "lr": 0.002,
            },
            "stage2": {"top_k": 1, "epochs": mode["epochs2"], "workers": 1},
            **kw,
        }

    # the UNet's latency sets the target of experiment B, measured with the same harness and profile
    info = DatasetInfo.load(data)
    unet = create_baseline("unet", args.backbone, len(info.bands), info.num_classes).eval()
    unet_ms = measure_latency(unet, (1, len(info.bands), mode["chip"], mode["chip"]), args.device).median_ms
    target = args.target_ratio * unet_ms

    # both experiments go through the product's own path: the API, Ray Jobs, stage 1 and stage 2
    settings = Settings(home=work / "home")
    cluster = connect(None, num_cpus=args.cpus, home=settings.home)
    try:
        app = create_app(settings, launcher=JobLauncher(cluster.dashboard_url, settings))
        with ServerThread(app) as server:
            api = ApiClient(server.url)
            ids = []
            for body in (
                spec("seed-nas", baselines=["unet", "fpn"], latency={"device": args.device}),
                spec("seed-nas-latency", latency={"device": args.device, "target_ms": target, "reward": "hard"}),
            ):
                created = api.submit(body)
                while (state := api.experiment(created["id"])["state"]) not in ("completed", "failed", "cancelled"):
                    time.sleep(5)
                print(f"experiment {body['name']}: {state}")
                ids.append(created["id"])
    finally:
        cluster.stop()
    store = get_store(settings.resolved_database_url)

    for exp_id, searched_name in zip(ids, ("nas", "nas_latency"), strict=True):
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
