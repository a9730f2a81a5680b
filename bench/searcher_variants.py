"""Searcher variants side by side: every (variant, device, seed) run of ``bench/searchers.py`` in one pool.

Each variant is a dict of options for one searcher (default ``ppo``); all variants share the table,
reward, target and seeds of ``bench/searchers.py``. Jobs go out seed-major, so a run cut short (a
time limit) still has every variant at fewer seeds, and the JSON is rewritten every 48 runs.

    .venv/bin/python bench/searcher_variants.py VARIANTS.json --devices titan_rtx_256,fpga --seeds 20 \\
        --workers 15 --out bench/results/searchers_ppo_sweep_h100.json

VARIANTS.json: ``{"name": {"lr": 0.003}, "other": {"ppo_epochs": 2}, ...}``. The result has, per
variant and device, the median trials to within 0.5 pp of the constrained optimum (null when the
median seed missed), the share of seeds that got there, the per-seed trials, and the mean best
feasible accuracy after the last trial. On the 16-core device host one 500-trial PPO run takes about
5 s, so a variant at 20 seeds x 6 devices takes about 40 s on 15 workers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import searchers as bench  # noqa: E402  (bench/searchers.py: the worker and the protocol)
from provenance import stamp  # noqa: E402  (bench/provenance.py)


def summarise(runs: dict, variants: dict, seeds: int, seconds: float) -> dict:
    summary = {}
    for name, by_device in runs.items():
        summary[name] = {"options": variants[name], "devices": {}}
        for device, rows in by_device.items():
            rows.sort()
            hits = np.array([h for _, h, _ in rows])
            median = float(np.median(hits))
            summary[name]["devices"][device] = {
                "t2t_median": median if np.isfinite(median) else None,
                "hit_share": float(np.isfinite(hits).mean()),
                "b500": float(np.mean([b for _, _, b in rows])),
                "hits": [int(h) if np.isfinite(h) else None for h in hits],
            }
    return {"seconds": round(seconds, 1), "seeds": seeds, "variants": summary}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", type=Path, help="JSON: variant name -> searcher options")
    parser.add_argument("--searcher", default="ppo")
    parser.add_argument("--devices", default="titan_rtx_256,gold_6226,raspi4,pixel3,fpga,eyeriss")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--table", default=str(bench.DEFAULT_TABLE))
    parser.add_argument("--acc", default="cifar10_test")
    parser.add_argument("--out", type=Path, default=Path("/tmp/searcher_variants.json"))
    args = parser.parse_args(argv)
    variants = json.loads(args.variants.read_text())
    devices = args.devices.split(",")
    jobs = [
        (name, (device, args.searcher, seed, args.trials, args.acc, 1, {args.searcher: options}))
        for seed in range(args.seeds)
        for name, options in variants.items()
        for device in devices
    ]
    runs: dict = {}
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=bench._init_worker, initargs=(args.table,)) as pool:
        futures = {pool.submit(bench.run_one, job): name for name, job in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            r = future.result()
            runs.setdefault(futures[future], {}).setdefault(r["device"], []).append(
                (r["seed"], r["hit"], float(r["best"][-1]))
            )
            if done % 48 == 0 or done == len(jobs):
                report = summarise(runs, variants, args.seeds, time.perf_counter() - start)
                report = stamp(report)
                args.out.write_text(json.dumps(report, indent=1))
    for name, v in report["variants"].items():
        cells = " ".join(f"{d[:6]}:{x['t2t_median']}|{x['hit_share']:.2f}" for d, x in v["devices"].items())
        print(f"{name:16s} {cells}")
    print(f"wrote {args.out} ({report['seconds']} s)")
    return report


if __name__ == "__main__":
    main()
