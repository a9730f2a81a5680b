"""Can latency rank architectures on this machine? Two separate passes over sampled architectures.

For ``--n`` architectures sampled from a NAS-FPN space, every model is measured once in pass A and
once in pass B (B in a different order, so slow drift of the host cannot make the passes agree by
accident). The table gives the Spearman rank correlation between the passes for the harness's
estimate (``median_ms``), for the plain median of the same samples, and for a naive wall-clock timing
(median of 10 runs); the median coefficient of variation; and what one measurement costs.

Run (writes ``bench/results/latency.json``)::

    nice -n 10 timeout 1200 .venv/bin/python bench/latency.py
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_spaces.builder import build_model  # noqa: E402
from search_spaces.latency import cpu_threads, get_profile, measure_latency  # noqa: E402
from search_spaces.nasfpn import NasFpnSpace, SearchSpaceConfig  # noqa: E402
from search_spaces.ops import list_ops  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def naive_wall_ms(model: torch.nn.Module, shape: tuple[int, int, int, int], threads: int) -> float:
    """What a hand-written timing loop gives: wall clock, 2 warm-up runs, median of 10."""
    x = torch.randn(shape)
    times = []
    with cpu_threads(threads), torch.inference_mode():
        model.eval()
        for i in range(12):
            start = time.perf_counter()
            model(x)
            if i >= 2:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="architectures to sample")
    parser.add_argument("--shape", default="1,3,32,32", help="input shape B,C,H,W")
    parser.add_argument("--profile", default="cpu-1threads")
    parser.add_argument("--seed", type=int, default=0)
    # the harness's own defaults, so the bench measures what the product measures
    harness = inspect.signature(measure_latency).parameters
    parser.add_argument("--min-repeats", type=int, default=harness["min_repeats"].default)
    parser.add_argument("--max-repeats", type=int, default=harness["max_repeats"].default)
    parser.add_argument("--target-cv", type=float, default=harness["target_cv"].default)
    parser.add_argument("--channels", default="32,64,128", help="decoder channel choices")
    parser.add_argument("--cells", default="3,5,7", help="number-of-cells choices")
    parser.add_argument(
        "--max-minutes", type=float, default=18.5, help="budget: pass A stops at half, pass B at the end"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive wall-clock comparison")
    parser.add_argument("--out", default=str(RESULTS / "latency.json"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    shape = tuple(int(d) for d in args.shape.split(","))
    profile = get_profile(args.profile)
    config = SearchSpaceConfig(
        backbones=("resnet18",),
        num_cells=tuple(int(c) for c in args.cells.split(",")),
        channels=tuple(int(c) for c in args.channels.split(",")),
        ops=tuple(list_ops()),
    )
    space = NasFpnSpace(config)
    rng = np.random.default_rng(args.seed)
    archs = {}
    while len(archs) < args.n:
        arch = space.sample(rng)
        archs.setdefault(arch.hash, arch)
    started = time.perf_counter()
    load_before = os.getloadavg()
    build_s = []
    models = {}
    for h, arch in archs.items():
        t0 = time.perf_counter()
        models[h] = build_model(arch, shape[1], 6).eval()
        build_s.append(time.perf_counter() - t0)

    settings = dict(min_repeats=args.min_repeats, max_repeats=args.max_repeats, target_cv=args.target_cv)
    order_a = list(models)
    order_b = [order_a[i] for i in np.random.default_rng(args.seed + 1).permutation(len(order_a))]
    passes = {}
    naive = {}
    budget_s = 60 * args.max_minutes
    for name, order, stop_s in (("A", order_a, budget_s / 2), ("B", order_b, budget_s)):
        passes[name] = {}
        naive[name] = {}
        for h in order:
            if time.perf_counter() - started > stop_s or (name == "B" and h not in passes["A"]):
                continue  # out of budget: compare the architectures both passes measured
            passes[name][h] = measure_latency(models[h], shape, profile, **settings)
            if not args.no_naive:
                naive[name][h] = naive_wall_ms(models[h], shape, profile.threads or 1)
        print(f"pass {name} done after {time.perf_counter() - started:.0f} s", flush=True)

    hashes = [h for h in order_a if h in passes["A"] and h in passes["B"]]
    a = [passes["A"][h] for h in hashes]
    b = [passes["B"][h] for h in hashes]
    rho = float(spearmanr([r.median_ms for r in a], [r.median_ms for r in b]).statistic)
    rho_raw = float(spearmanr([r.raw_median_ms for r in a], [r.raw_median_ms for r in b]).statistic)
    rho_naive = (
        float(spearmanr([naive["A"][h] for h in hashes], [naive["B"][h] for h in hashes]).statistic)
        if not args.no_naive
        else None
    )
    every = a + b
    pairs = zip(a, b, strict=True)
    rel_diff = [abs(x.median_ms - y.median_ms) / min(x.median_ms, y.median_ms) for x, y in pairs]
    cost = [r.wall_s for r in every]
    summary = {
        "spearman": rho,
        "spearman_raw_median": rho_raw,
        "spearman_naive_wall": rho_naive,
        "median_cv": float(statistics.median(r.cv for r in every)),
        "median_rel_diff_between_passes": float(statistics.median(rel_diff)),
        "latency_ms_range": [float(min(r.median_ms for r in every)), float(max(r.median_ms for r in every))],
        "stable_share": float(np.mean([r.stable for r in every])),
        "median_repeats": float(statistics.median(r.repeats for r in every)),
        "measurement_cost_s_median": float(statistics.median(cost)),
        "measurement_cost_s_mean": float(np.mean(cost)),
        "build_s_median": float(statistics.median(build_s)),
    }
    report = {
        **summary,
        "n_architectures": len(hashes),
        "n_sampled": len(archs),
        "profile": profile.name,
        "clock": a[0].clock,
        "input_shape": list(shape),
        "harness_settings": settings,
        "space": {
            "backbones": list(config.backbones),
            "num_cells": list(config.num_cells),
            "channels": list(config.channels),
            "ops": list(config.ops),
            "levels": list(config.levels),
        },
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg_before": list(load_before),
        "load_avg_after": list(os.getloadavg()),
        "niceness": os.nice(0),
        "total_s": time.perf_counter() - started,
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "architectures": [
            {
                "hash": h,
                "cells": len(archs[h].cells),
                "channels": archs[h].channels,
                "pass_a_ms": passes["A"][h].median_ms,
                "pass_b_ms": passes["B"][h].median_ms,
                "cv_a": passes["A"][h].cv,
                "cv_b": passes["B"][h].cv,
                "naive_a_ms": naive["A"].get(h),
                "naive_b_ms": naive["B"].get(h),
            }
            for h in hashes
        ],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)

    title = f"latency ranking, {len(hashes)} architectures, {profile.name} ({a[0].clock}), {list(shape)}"
    print(f"\n{title}")
    print(f"{'arch':<18}{'cells':>6}{'ch':>5}{'A ms':>9}{'B ms':>9}{'cv A':>7}{'cv B':>7}")
    for row in sorted(report["architectures"], key=lambda r: r["pass_a_ms"]):
        print(
            f"{row['hash']:<18}{row['cells']:>6}{row['channels']:>5}{row['pass_a_ms']:>9.2f}"
            f"{row['pass_b_ms']:>9.2f}{row['cv_a']:>7.3f}{row['cv_b']:>7.3f}"
        )
    print(f"\n{'metric':<34}{'value':>12}")
    for key, value in summary.items():
        shown = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        if isinstance(value, list):
            shown = f"{value[0]:.1f}-{value[1]:.1f}"
        print(f"{key:<34}{shown:>12}")
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
