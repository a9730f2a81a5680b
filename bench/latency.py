"""Can latency rank architectures on this machine, run after run, and beside training? A reproducibility bench.

For ``--n`` architectures sampled from a NAS-FPN space, each of ``--runs`` runs measures every model once
in pass A and once in pass B (B in another order, drawn afresh each run, so slow drift of the host
cannot make the passes agree by accident). Per run it gives the Spearman rank correlation between the
passes for the harness's estimate (``median_ms``), for the plain median of the same samples, and for a
naive wall-clock timing (median of 10 runs); the median coefficient of variation; and what one
measurement costs. Then, unless ``--no-beside-training``, a real training loop (a searched model,
1 thread, SGD on random tiles) runs in another process -- on the other core of a 2-core host, as a
trial would -- while every model is measured once more: the bench reports how far each measurement
moves from its quiet value (the median of its quiet passes) and the Spearman of beside-training vs
quiet.

The goal is ``spearman >= --goal`` (0.95) in every run; when it is not met (or the training loop did
not train throughout, or the budget cut the comparison below 20 architectures) the bench still writes
its JSON, then says why on stderr and exits with status 1.

Run (writes ``bench/results/latency.json``)::

    nice -n 10 timeout 1800 .venv/bin/python bench/latency.py
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import stamp  # noqa: E402
from search_spaces.builder import build_model  # noqa: E402
from search_spaces.latency.harness import measure_latency  # noqa: E402
from search_spaces.latency.profiles import get_profile  # noqa: E402
from search_spaces.latency.results import LatencyResult  # noqa: E402
from search_spaces.latency.runners import cpu_threads  # noqa: E402
from search_spaces.nasfpn import NasFpnSpace, SearchSpaceConfig  # noqa: E402
from search_spaces.ops import list_ops  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MIN_COMPARED = 20  # fewer architectures in both passes and a Spearman says little


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


def train_beside(ready, stop, steps, seed: int) -> None:  # noqa: ANN001 (multiprocessing primitives)
    """A trial's training loop in miniature: a searched model (5 cells, 64 channels), 1 thread, SGD with
    momentum on random 8 x 3 x 64 x 64 tiles and 6-class labels, until ``stop`` is set."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    space = NasFpnSpace(SearchSpaceConfig(num_cells=(5,), channels=(64,), ops=tuple(list_ops())))
    model = build_model(space.sample(np.random.default_rng(seed)), 3, 6).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 6, (8, 64, 64))
    while not stop.is_set():
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
        with steps.get_lock():
            steps.value += 1
        if steps.value == 3:
            ready.set()


def code_dirty() -> bool | None:
    """Whether the code this bench measures (itself and the latency meter) differs from the commit: the
    commit's ``-dirty`` mark says only that some tracked file does. ``None`` outside git."""
    mine = ["bench/latency.py", "search_spaces/latency"]
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--", *mine], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return bool(done.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None


def environment() -> dict[str, object]:
    """What provenance's ``machine`` leaves out and a latency depends on."""
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}


def rel_diffs(x: list[float], y: list[float]) -> list[float]:
    return [abs(a - b) / min(a, b) for a, b in zip(x, y, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="architectures to sample")
    parser.add_argument("--runs", type=int, default=3, help="independent A/B runs (each: two passes)")
    parser.add_argument("--goal", type=float, default=0.95, help="Spearman every run must reach")
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
        "--max-minutes", type=float, default=8.0, help="budget per run: pass A stops at half, pass B at the end"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive wall-clock comparison")
    parser.add_argument("--no-beside-training", action="store_true", help="skip the beside-training pass")
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
    build_s = []
    models = {}
    for h, arch in archs.items():
        t0 = time.perf_counter()
        models[h] = build_model(arch, shape[1], 6).eval()
        build_s.append(time.perf_counter() - t0)

    settings = dict(min_repeats=args.min_repeats, max_repeats=args.max_repeats, target_cv=args.target_cv)
    order_a = list(models)
    failures: list[str] = []
    runs = []
    quiet: dict[str, list[float]] = {h: [] for h in models}
    quiet_direct: dict[str, list[float]] = {h: [] for h in models}
    quiet_results: list[LatencyResult] = []
    for run in range(1, args.runs + 1):
        run_started = time.perf_counter()
        load_before = os.getloadavg()
        perm = np.random.default_rng(args.seed + run).permutation(len(order_a))
        order_b = [order_a[i] for i in perm]
        passes: dict[str, dict[str, LatencyResult]] = {}
        naive: dict[str, dict[str, float]] = {}
        budget_s = 60 * args.max_minutes
        for name, order, stop_s in (("A", order_a, budget_s / 2), ("B", order_b, budget_s)):
            passes[name], naive[name] = {}, {}
            for h in order:
                if time.perf_counter() - run_started > stop_s or (name == "B" and h not in passes["A"]):
                    continue  # out of budget: compare the architectures both passes measured
                passes[name][h] = measure_latency(models[h], shape, profile, **settings)
                if not args.no_naive:
                    naive[name][h] = naive_wall_ms(models[h], shape, profile.threads or 1)
            print(f"run {run} pass {name} done after {time.perf_counter() - started:.0f} s", flush=True)
        hashes = [h for h in order_a if h in passes["A"] and h in passes["B"]]
        a = [passes["A"][h] for h in hashes]
        b = [passes["B"][h] for h in hashes]
        for h in hashes:
            quiet[h] += [passes["A"][h].median_ms, passes["B"][h].median_ms]
            quiet_direct[h] += [passes["A"][h].direct_ms, passes["B"][h].direct_ms]
        quiet_results += a + b
        rho = float(spearmanr([r.median_ms for r in a], [r.median_ms for r in b]).statistic)
        if len(hashes) < MIN_COMPARED:
            failures.append(f"run {run}: only {len(hashes)} architectures in both passes (budget), need {MIN_COMPARED}")
        if not rho >= args.goal:
            failures.append(f"run {run}: Spearman {rho:.3f} between passes, below the goal {args.goal}")
        diffs = rel_diffs([r.median_ms for r in a], [r.median_ms for r in b])
        cost = [r.wall_s for r in a + b]
        runs.append(
            {
                "run": run,
                "spearman": rho,
                "spearman_raw_median": float(
                    spearmanr([r.raw_median_ms for r in a], [r.raw_median_ms for r in b]).statistic
                ),
                "spearman_naive_wall": (
                    float(spearmanr([naive["A"][h] for h in hashes], [naive["B"][h] for h in hashes]).statistic)
                    if not args.no_naive
                    else None
                ),
                "n_architectures": len(hashes),
                "median_rel_diff_between_passes": float(statistics.median(diffs)),
                "max_rel_diff_between_passes": float(max(diffs)),
                "median_cv": float(statistics.median(r.cv for r in a + b)),
                "stable_share": float(np.mean([r.stable for r in a + b])),
                "median_repeats": float(statistics.median(r.repeats for r in a + b)),
                "measurement_cost_s_median": float(statistics.median(cost)),
                "measurement_cost_s_max": float(max(cost)),
                "load_avg_before": list(load_before),
                "load_avg_after": list(os.getloadavg()),
                "total_s": time.perf_counter() - run_started,
                "architectures": [
                    {
                        "hash": h,
                        "pass_a_ms": passes["A"][h].median_ms,
                        "pass_b_ms": passes["B"][h].median_ms,
                        "repeats_a": passes["A"][h].repeats,
                        "repeats_b": passes["B"][h].repeats,
                        "naive_a_ms": naive["A"].get(h),
                        "naive_b_ms": naive["B"].get(h),
                    }
                    for h in hashes
                ],
            }
        )
        print(f"run {run}: spearman {rho:.3f}, load {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}", flush=True)

    beside = None
    if not args.no_beside_training:
        beside = measure_beside_training(args, models, order_a, quiet, quiet_direct, shape, profile, settings, failures)

    rhos = [r["spearman"] for r in runs]
    cost = [r.wall_s for r in quiet_results]
    report = stamp({
        "goal": {"spearman_every_run_at_least": args.goal, "met": not failures, "failures": failures},
        "spearman": {"min": min(rhos), "median": statistics.median(rhos), "max": max(rhos), "per_run": rhos},
        "measurement_cost_s": {
            "median": float(statistics.median(cost)),
            "mean": float(np.mean(cost)),
            "max": float(max(cost)),
        },
        "latency_ms_range": [min(min(v) for v in quiet.values() if v), max(max(v) for v in quiet.values() if v)],
        "beside_training": beside,
        "runs": runs,
        "code_dirty": code_dirty(),
        "environment": environment(),
        "n_sampled": len(archs),
        "profile": profile.name,
        "clock": quiet_results[0].clock,
        "input_shape": list(shape),
        "harness_settings": settings,
        "space": {
            "backbones": list(config.backbones),
            "num_cells": list(config.num_cells),
            "channels": list(config.channels),
            "ops": list(config.ops),
            "levels": list(config.levels),
        },
        "architectures": {h: {"cells": len(archs[h].cells), "channels": archs[h].channels} for h in archs},
        "build_s_median": float(statistics.median(build_s)),
        "niceness": os.nice(0),
        "total_s": time.perf_counter() - started,
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)

    print(f"\nlatency ranking, {args.n} architectures, {profile.name} ({report['clock']}), {list(shape)}")
    print(
        f"{'run':>4}{'spearman':>10}{'raw med':>9}{'naive':>8}{'med diff':>10}{'max diff':>10}{'cost s':>8}{'load':>12}"
    )
    for r in runs:
        naive_rho = "n/a" if r["spearman_naive_wall"] is None else f"{r['spearman_naive_wall']:.3f}"
        print(
            f"{r['run']:>4}{r['spearman']:>10.3f}{r['spearman_raw_median']:>9.3f}{naive_rho:>8}"
            f"{r['median_rel_diff_between_passes']:>10.2%}{r['max_rel_diff_between_passes']:>10.2%}"
            f"{r['measurement_cost_s_median']:>8.2f}{r['load_avg_before'][0]:>6.2f}-{r['load_avg_after'][0]:.2f}"
        )
    s = report["spearman"]
    print(f"spearman min/median/max {s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f} over {len(runs)} runs")
    if beside:
        print(
            f"beside training ({beside['trainer']['steps_per_s']:.1f} steps/s): spearman vs quiet "
            f"{beside['spearman_vs_quiet']:.3f}, |rel diff| median {beside['median_abs_rel_diff']:.2%} "
            f"max {beside['max_abs_rel_diff']:.2%}, signed median {beside['median_signed_rel_diff']:+.2%}"
        )
    print(f"wrote {out}")
    if failures:
        print("\nFAILED: the latency bench's goal is not met:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def measure_beside_training(args, models, order, quiet, quiet_direct, shape, profile, settings, failures) -> dict:  # noqa: ANN001
    """Every model measured once more while :func:`train_beside` trains in another process."""
    ctx = mp.get_context("spawn")
    ready, stop, steps = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    trainer = ctx.Process(target=train_beside, args=(ready, stop, steps, args.seed), daemon=True)
    trainer.start()
    try:
        if not ready.wait(timeout=300):
            raise RuntimeError("the training process did not start training within 300 s")
        load_before = os.getloadavg()
        steps_before, t0 = steps.value, time.perf_counter()
        results = {}
        for h in order:
            results[h] = measure_latency(models[h], shape, profile, **settings)
            if not trainer.is_alive():
                break
        elapsed, trained = time.perf_counter() - t0, steps.value - steps_before
        alive = trainer.is_alive()
    finally:
        stop.set()
        trainer.join(timeout=60)
        if trainer.is_alive():
            trainer.kill()
    print(f"beside training done ({trained} training steps in {elapsed:.0f} s)", flush=True)
    if not alive or len(results) < len(order):
        failures.append("beside training: the training process died before every model was measured")
    if trained / elapsed < 1.0:
        failures.append(f"beside training: only {trained} training steps in {elapsed:.0f} s, the loop barely ran")
    hashes = [h for h in order if h in results and quiet[h]]
    quiet_ms = [statistics.median(quiet[h]) for h in hashes]
    beside_ms = [results[h].median_ms for h in hashes]
    signed = [b / q - 1 for b, q in zip(beside_ms, quiet_ms, strict=True)]
    direct = [results[h].direct_ms / statistics.median(quiet_direct[h]) - 1 for h in hashes]
    return {
        "spearman_vs_quiet": float(spearmanr(beside_ms, quiet_ms).statistic),
        "median_abs_rel_diff": float(statistics.median(abs(d) for d in signed)),
        "max_abs_rel_diff": float(max(abs(d) for d in signed)),
        "median_signed_rel_diff": float(statistics.median(signed)),
        "direct_ms_median_signed_rel_diff": float(statistics.median(direct)),
        "direct_ms_max_abs_rel_diff": float(max(abs(d) for d in direct)),
        "quiet_is": "the median of the model's quiet passes (2 per run)",
        "measurement_cost_s_median": float(statistics.median(results[h].wall_s for h in hashes)),
        "stable_share": float(np.mean([results[h].stable for h in hashes])),
        "median_repeats": float(statistics.median(results[h].repeats for h in hashes)),
        "load_avg_before": list(load_before),
        "load_avg_after": list(os.getloadavg()),
        "trainer": {
            "what": "searched model (5 cells, 64 ch), 1 thread, SGD momentum, batch 8x3x64x64, 6 classes",
            "steps": trained,
            "steps_per_s": trained / elapsed,
            "seconds": elapsed,
        },
        "architectures": [
            {"hash": h, "quiet_ms": q, "beside_ms": b, "rel_diff": d, "repeats": results[h].repeats}
            for h, q, b, d in zip(hashes, quiet_ms, beside_ms, signed, strict=True)
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
