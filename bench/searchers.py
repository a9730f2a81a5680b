"""Searchers on a real tabular benchmark: who finds the fastest-accurate architecture in fewest trials.

For every latency device of the table (``lat_*`` columns), with the hard reward and the target set to
that device's median latency (``--budget Q``: its Q quantile instead), every registered searcher and
every variant of :data:`VARIANTS` (``ppo_nomodel``: PPO without its reward model; ``tpe_screened``: TPE
behind the same model screening any searcher can use) runs ``--trials`` trials for ``--seeds`` seeds
(in-process, :func:`run_search`; each result carries the latency constraint, as a trial that measures
latency before training knows it). Reported per device and searcher:

- ``best_at``: mean over seeds of the best feasible accuracy (latency strictly under the target) after
  50, 100, 200 and 500 trials;
- ``trials_to_target_median``: median over seeds of the trials needed to come within 0.5 pp of the best
  feasible accuracy in the whole table (``null`` when the median seed never got there);
- ``hit_share``: share of seeds that got there; ``infeasible_share``: share of proposals over the target;
- ``fallback_share``: share of trials proposed by the dedup fallback rather than the searcher
  (``trace.stats["explored"]``), and ``stats``: the dedup counts summed over seeds.

``--proposal-cost`` times one PPO proposal after 500 observations (pool acquisition, GP scoring and
the policy's log-probabilities) and the refit each policy update adds, with ``restart_model=False`` so
the model holds all 500; ``--proposal-cost-only --merge`` times it alone and adds it to ``--out``. Both
also time a proposal on the product's NAS-FPN space (``proposal_cost_nasfpn``: 150 trials of a synthetic
additive reward, ``pool_two_edit`` 0 and 1), whose pool is far larger than NB201's.

Then a few seeds go through the Ray Tune adapter (a real local Ray, concurrency > 1) and the same
seeds through the in-process loop with as many proposals outstanding, to show they behave alike.

    nice -n 10 .venv/bin/python bench/searchers.py [--table CSV] [--seeds 20] [--trials 500] [--workers N]

Packages: numpy, pandas and torch for every run; optuna too, because ``search_spaces.searchers``
imports the ``tpe`` searcher (so even a ``--searchers ppo`` run needs it); ray[tune] only for the
Tune comparison (``--tune-seeds 0`` skips it; ``--tune-only --merge`` adds it to an existing file).
Runs split over machines or sessions are joined with ``--merge`` (add searchers to ``--out``) or
``--combine`` (merge whole files); a joined file's ``commit``, ``command`` and ``machine`` are the
joining run's, and its ``runs`` lists those of every run whose numbers it holds. Seconds per 500-trial
run on one core of a shared 2-core VM: random 0.0, regularized_evolution 0.1, ppo_nomodel 1.5, tpe 2.7,
ppo 5-6, tpe_screened 30, gp 400-940 (see :data:`_SLOW_FIRST`; the pool starts the slow ones first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# one BLAS thread per process, set before numpy loads it (the pool's workers are forked from here)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import stamp  # noqa: E402

PROVENANCE = ("commit", "command", "machine")

DEFAULT_TABLE = ROOT.parent / "shared" / "data" / "nb201-latency" / "nb201_cifar10_latency.csv.gz"
CHECKPOINTS = (50, 100, 200, 500)
WITHIN_PP = 0.5
EXTRAS = ("tune", "proposal_cost", "proposal_cost_nasfpn")  # sections beside the grid, kept by --merge/--combine

_TABLE = None

#: bench-only names: (registered searcher, its options, behind the Screened wrapper)
VARIANTS: dict[str, tuple[str, dict, bool]] = {
    "ppo_nomodel": ("ppo", {"pool_draws": 0}, False),
    "tpe_screened": ("tpe", {}, True),
}


def _init_worker(table_path: str) -> None:
    global _TABLE
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from search_spaces.searchers import TableSpace

    _TABLE = TableSpace.from_csv(table_path)


def target_accuracy(table, device: str, acc_col: str, budget: float) -> tuple[float, float]:
    """(latency target, best feasible accuracy) of a device — the constrained optimum to find. The
    target is the ``budget`` quantile of the device's latencies (0.5: its median, what PPO was tuned on)."""
    lat = table.latency(device)
    target = float(np.quantile(lat, budget))
    return target, float(table.column(acc_col)[lat < target].max())


def summarise(best_curves: list[np.ndarray], hits: list[float], infeasible: list[float], trials: int) -> dict:
    """The per-(device, searcher) record of the JSON, from the per-seed results."""
    checkpoints = [c for c in CHECKPOINTS if c < trials] + [trials]
    best_at = {}
    for c in checkpoints:
        values = np.array([curve[c - 1] if len(curve) >= c else np.nan for curve in best_curves])
        best_at[str(c)] = None if np.isnan(values).all() else round(float(np.nanmean(values)), 4)
    median = float(np.median(np.array(hits, dtype=float)))
    return {
        "best_at": best_at,
        "trials_to_target_median": None if not np.isfinite(median) else median,
        "hit_share": round(float(np.mean(np.isfinite(hits))), 3),
        "infeasible_share": round(float(np.mean(infeasible)), 4),
        "trials_to_target": [None if not np.isfinite(h) else int(h) for h in hits],
    }


def hit_time(trace, optimum: float) -> float:
    """1-based trial at which a feasible architecture within ``WITHIN_PP`` of the optimum was found."""
    good = trace.feasible & (np.asarray(trace.accuracy) >= optimum - WITHIN_PP - 1e-9)
    return float(np.argmax(good) + 1) if good.any() else float("inf")


def make_searcher(name: str, table, seed: int, options: dict):
    """A registered searcher or a :data:`VARIANTS` entry, with ``options[name]`` over the variant's own."""
    from search_spaces.searchers import Screened, create_searcher

    base, own, screened = VARIANTS.get(name, (name, {}, False))
    searcher = create_searcher(base, table, seed=seed, **{**own, **options.get(name, {})})
    return Screened(searcher) if screened else searcher


def run_one(job: tuple) -> dict:
    """One (device, searcher, seed) search in a worker process."""
    device, searcher, seed, trials, acc_col, outstanding, options, budget = job
    from search_spaces.searchers import run_search

    target, optimum = target_accuracy(_TABLE, device, acc_col, budget)
    start = time.perf_counter()
    trace = run_search(
        make_searcher(searcher, _TABLE, seed, options),
        _TABLE,
        device=device,
        trials=trials,
        target_ms=target,
        accuracy=acc_col,
        outstanding=outstanding,
        seed=seed,
    )
    return {
        "device": device,
        "searcher": searcher,
        "seed": seed,
        "best": trace.best_feasible(),
        "hit": hit_time(trace, optimum),
        "infeasible": float(1.0 - trace.feasible.mean()),
        "stats": dict(trace.stats),
        "seconds": time.perf_counter() - start,
    }


# Slowest first (seconds per run in the module docstring), so no long run starts last and idles the pool.
_SLOW_FIRST = {"gp": 0, "tpe_screened": 1, "ppo": 2, "tpe": 3}


def run_grid(table_path, devices, searchers, seeds, trials, acc_col, outstanding, workers, options, budget) -> dict:
    """Every (device, searcher, seed) run in a pool of ``workers`` processes; results in seed order."""
    jobs = [(d, s, seed, trials, acc_col, outstanding, options, budget)
            for d in devices for s in searchers for seed in seeds]  # fmt: skip
    jobs.sort(key=lambda job: _SLOW_FIRST.get(job[1], len(_SLOW_FIRST)))
    results: dict = {}
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(table_path),)) as pool:
        for r in pool.map(run_one, jobs, chunksize=1):
            results.setdefault(r["device"], {}).setdefault(r["searcher"], []).append(r)
    for by_searcher in results.values():
        for runs in by_searcher.values():
            runs.sort(key=lambda r: r["seed"])
    return results


def tune_comparison(table, device, searchers, seeds, trials, concurrency, acc_col, options, budget) -> dict:
    """The same searchers through the Ray Tune adapter on a local Ray, against the in-process loop."""
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from search_spaces.rewards import compute_reward
    from search_spaces.searchers import run_search
    from search_spaces.searchers.tabular import SearchTrace
    from search_spaces.searchers.tune import TuneAdapter

    target, optimum = target_accuracy(table, device, acc_col, budget)
    acc, lat = table.column(acc_col), table.latency(device)

    def trainable(config, acc=acc, lat=lat, target=target):
        row = config["row"]
        tune.report(
            {
                "accuracy": float(acc[row]),
                "latency_ms": float(lat[row]),
                "reward": compute_reward("hard", acc[row], lat[row], target),
            }
        )

    ray.init(num_cpus=concurrency, include_dashboard=False, log_to_driver=False)
    out: dict = {"device": device, "trials": trials, "concurrency": concurrency, "seeds": list(seeds)}
    try:
        for name in searchers:
            tuned, local = [], []
            for seed in seeds:
                start = time.perf_counter()
                adapter = TuneAdapter(
                    make_searcher(name, table, seed, options),
                    to_config=lambda t: {"row": table.row(t)},
                )
                tuner = tune.Tuner(
                    tune.with_resources(trainable, {"cpu": 1}),
                    tune_config=tune.TuneConfig(
                        search_alg=ConcurrencyLimiter(adapter, max_concurrent=concurrency),
                        num_samples=trials,
                        metric="reward",
                        mode="max",
                    ),
                    run_config=tune.RunConfig(verbose=0, storage_path=f"/tmp/geonas-bench-tune-{os.getpid()}"),
                )
                results = tuner.fit()
                frame = results.get_dataframe().sort_values("timestamp", kind="stable")
                trace = SearchTrace(target_ms=target)
                trace.accuracy = frame["accuracy"].tolist()
                trace.latency = frame["latency_ms"].tolist()
                tuned.append((trace, time.perf_counter() - start))
                local.append(
                    run_search(
                        make_searcher(name, table, seed, options),
                        table,
                        device=device,
                        trials=trials,
                        target_ms=target,
                        accuracy=acc_col,
                        outstanding=concurrency,
                        seed=seed,
                    )
                )
            out[name] = {
                "tune": summarise(
                    [t.best_feasible() for t, _ in tuned],
                    [hit_time(t, optimum) for t, _ in tuned],
                    [1 - t.feasible.mean() for t, _ in tuned],
                    trials,
                ),
                "in_process": summarise(
                    [t.best_feasible() for t in local],
                    [hit_time(t, optimum) for t in local],
                    [1 - t.feasible.mean() for t in local],
                    trials,
                ),
                "tune_seconds_per_run": round(float(np.mean([s for _, s in tuned])), 1),
            }
    finally:
        ray.shutdown()
    return out


def proposal_cost(table, device: str, acc_col: str, budget: float, observations: int = 500, repeats: int = 50) -> dict:
    """Milliseconds per PPO proposal once ``observations`` architectures are observed, and the refit.

    The search runs ``observations`` trials; then ``repeats`` proposals are made and withdrawn (the
    model is extended by the last observation first, as in a search), and the refit of the model's
    hyper-parameters that each policy update does is timed as well, with its cost per proposal.
    """
    import torch

    from search_spaces.searchers import create_searcher, run_search

    torch.set_num_threads(1)
    target, _ = target_accuracy(table, device, acc_col, budget)
    ppo = create_searcher("ppo", table, seed=0, restart_model=False)  # the model keeps every observation
    run_search(ppo, table, device=device, trials=observations, target_ms=target, accuracy=acc_col)
    assert ppo.model.ready(), "the reward model is not in use: nothing to time"
    ppo.model._models()  # the extensions since the last refit, as the next proposal would do them
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proposal = ppo.propose()
        times.append(time.perf_counter() - start)
        ppo.withdraw(proposal.id)
    start = time.perf_counter()
    ppo.model.refit()
    refit = time.perf_counter() - start
    start = time.perf_counter()
    ppo.model.add(proposal.tokens, 0.0, 0.0)
    ppo.model._models()
    extend = time.perf_counter() - start
    batch = ppo.hp["batch_size"]
    return {
        "device": device,
        "observations": len(ppo.model),
        "pool": {k: ppo.hp[k] for k in ("pool_draws", "pool_neighbours", "pool_two_edit", "prior_weight")},
        "proposal_ms_median": round(1e3 * float(np.median(times)), 2),
        "proposal_ms_p90": round(1e3 * float(np.quantile(times, 0.9)), 2),
        "extend_ms": round(1e3 * extend, 2),
        "refit_ms": round(1e3 * refit, 1),
        "refit_ms_per_proposal": round(1e3 * refit / batch, 2),
    }


def nasfpn_proposal_cost(observations: int = 150, seed: int = 0) -> dict:
    """Milliseconds per PPO proposal on the product's own space (NAS-FPN, the default config: 31 token
    positions), once the reward model is in use, with and without ``pool_two_edit``.

    Rewards are a seeded additive function of the tokens plus noise (what the Hamming-kernel model can
    learn, so the pool is used); ``observations`` trials in all, as a real experiment has, not 500.
    Proposals made before the model was ready (plain policy draws) are left out of the medians.
    """
    import torch

    from search_spaces.nasfpn import NasFpnSpace
    from search_spaces.searchers import create_searcher

    torch.set_num_threads(1)
    space = NasFpnSpace()
    weights = np.random.default_rng(seed).normal(size=(len(space.sizes), max(space.sizes)))
    out: dict = {"space": "NasFpnSpace() defaults", "positions": len(space.sizes), "observations": observations}
    for two_edit in (0, 1):
        ppo = create_searcher("ppo", space, seed=seed, pool_two_edit=two_edit)
        noise = np.random.default_rng(seed + 1)
        times = []
        for _ in range(observations):
            start = time.perf_counter()
            proposal = ppo.propose()
            elapsed = time.perf_counter() - start
            if ppo.model.ready():
                times.append(elapsed)
            reward = float(sum(weights[i, t] for i, t in enumerate(proposal.tokens)) + 0.1 * noise.normal())
            ppo.observe(proposal.id, reward)
        if not times:
            raise SystemExit("NAS-FPN proposal cost: the reward model was never in use, so no pool was timed")
        out[f"pool_two_edit_{two_edit}"] = {
            "proposals_with_model": len(times),
            "pool_size_at_end": len(ppo._pool()),
            "proposal_ms_median": round(1e3 * float(np.median(times)), 1),
            "proposal_ms_p90": round(1e3 * float(np.quantile(times, 0.9)), 1),
        }
    return out


def print_table(devices: dict) -> None:
    header = f"{'device':14} {'searcher':22} " + " ".join(f"{'@' + c:>8}" for c in map(str, CHECKPOINTS))
    print(header + f" {'t2t med':>8} {'hit':>5} {'infeas':>7} {'s/run':>6} {'seeds':>5}")
    for device, by_searcher in devices.items():
        for name, rec in by_searcher.items():
            cells = " ".join(f"{rec['best_at'].get(str(c)) or float('nan'):8.2f}" for c in CHECKPOINTS)
            t2t = rec["trials_to_target_median"]
            print(
                f"{device:14} {name:22} {cells} {('-' if t2t is None else f'{t2t:.0f}'):>8} "
                f"{rec['hit_share']:5.2f} {rec['infeasible_share']:7.3f} {rec.get('seconds_per_run', 0):6.1f} "
                f"{rec.get('seeds', '?'):>5}"
            )


def runs_of(part: dict) -> list[dict]:
    """Who made ``part``'s numbers: its ``runs`` when it was joined from several, else its own stamp
    (``unknown`` where a file made before results were stamped lacks it)."""
    return part.get("runs") or [{k: part.get(k, "unknown") for k in PROVENANCE}]


def combine(paths: list[str], out: str) -> dict:
    """Merge result files of the same table/accuracy/trials; later files win per (device, searcher)."""
    report: dict = {"config": {"combined_from": []}, "devices": {}}
    runs: list[dict] = []
    for path in paths:
        part = json.loads(Path(path).read_text())
        runs += runs_of(part)
        cfg = part["config"]
        report.update({k: part[k] for k in EXTRAS if k in part})  # the last file's
        if not any(part["devices"].values()):
            continue
        for key in ("table", "accuracy", "trials", "reward", "target", "within_pp"):
            if report["config"].setdefault(key, cfg.get(key)) != cfg.get(key):
                raise SystemExit(f"--combine: {path} has {key}={cfg.get(key)!r}, not {report['config'][key]!r}")
        report["config"]["combined_from"] += cfg.get("combined_from") or [  # a joined file: its own parts
            {k: cfg.get(k) for k in ("seeds", "first_seed", "options", "grid_seconds", "workers", "outstanding")}
            | {"searchers": sorted({n for v in part["devices"].values() for n in v})}
        ]
        report["config"].setdefault("targets", {}).update(cfg.get("targets", {}))
        for device, by_searcher in part["devices"].items():
            for name, rec in by_searcher.items():
                report["devices"].setdefault(device, {})[name] = {"seeds": cfg.get("seeds"), **rec}
    print_table(report["devices"])
    report = stamp({**report, "runs": runs})
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", default=str(DEFAULT_TABLE))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds run are first-seed .. first-seed+seeds-1 (screen options on seeds other than the reported 0..19)",
    )
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "searchers.json"))
    parser.add_argument("--acc", default="cifar10_test", help="accuracy column")
    parser.add_argument(
        "--budget",
        type=float,
        default=0.5,
        help="latency target as a quantile of each device's latencies (0.5: the median, the tuned setting; "
        "e.g. 0.25 for a tighter budget no searcher was tuned on)",
    )
    parser.add_argument("--devices", nargs="*", help="subset of devices (default: every lat_* column)")
    parser.add_argument("--searchers", nargs="*", help="subset of searchers (default: all registered)")
    parser.add_argument("--workers", type=int, default=2, help="processes (at most 2 on a shared machine)")
    parser.add_argument("--outstanding", type=int, default=1, help="proposals in flight in the in-process loop")
    parser.add_argument("--options", default="{}", help='JSON: {"ppo": {"lr": 0.01}, ...}')
    parser.add_argument("--tune-seeds", type=int, default=2, help="seeds through the Ray Tune adapter (0: skip)")
    parser.add_argument("--tune-trials", type=int, default=200)
    parser.add_argument("--tune-concurrency", type=int, default=2)
    parser.add_argument("--tune-searchers", nargs="*", default=["ppo", "random"])
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other searchers' results already in --out (same seeds/trials/table) and add these",
    )
    parser.add_argument("--tune-only", action="store_true", help="skip the grid, run only the Tune comparison")
    parser.add_argument("--proposal-cost", action="store_true", help="also time a PPO proposal at 500 observations")
    parser.add_argument("--proposal-cost-only", action="store_true", help="skip the grid; with --merge, add to --out")
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="JSON",
        help="run nothing: merge these result files (runs done separately, e.g. in parallel) into --out",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.budget < 1.0:
        parser.error(f"--budget is a quantile of the device's latencies, strictly between 0 and 1, not {args.budget}")
    if args.combine:
        return combine(args.combine, args.out)

    from search_spaces.searchers import TableSpace, list_searchers

    table = TableSpace.from_csv(args.table)
    devices = args.devices or table.devices
    skip_grid = args.tune_only or args.proposal_cost_only
    searchers = [] if skip_grid else (args.searchers or [*list_searchers(), *VARIANTS])
    options = json.loads(args.options)
    start = time.perf_counter()
    grid = run_grid(
        args.table,
        devices,
        searchers,
        range(args.first_seed, args.first_seed + args.seeds),
        args.trials,
        args.acc,
        args.outstanding,
        args.workers,
        options,
        args.budget,
    )
    grid_seconds = time.perf_counter() - start
    report: dict = {
        "config": {
            "table": Path(args.table).name,
            "accuracy": args.acc,
            "reward": "hard",
            "target": "median latency of the device"
            if args.budget == 0.5
            else f"{args.budget} quantile of the device's latencies",
            "within_pp": WITHIN_PP,
            "seeds": args.seeds,
            "first_seed": args.first_seed,
            "trials": args.trials,
            "outstanding": args.outstanding,
            "options": options,
            "grid_seconds": round(grid_seconds, 1),
            "workers": args.workers,
        },
        "devices": {},
    }
    merged_runs: list[dict] = []  # the earlier runs whose numbers --merge keeps
    if args.merge and Path(args.out).exists():
        previous = json.loads(Path(args.out).read_text())
        merged_runs = runs_of(previous)
        same = all(previous["config"].get(k) == report["config"][k] for k in ("table", "accuracy", "trials", "target"))
        if not same or previous["config"].get("first_seed", 0) != args.first_seed:
            raise SystemExit(
                f"--merge: {args.out} was run with other trials/table/accuracy/target/first seed; rerun everything"
            )
        report["devices"] = {
            d: {n: {"seeds": previous["config"].get("seeds"), **rec} for n, rec in v.items()}
            for d, v in previous["devices"].items()
        }
        report["config"]["options"] = {**previous["config"].get("options", {}), **options}
        report["config"]["targets"] = dict(previous["config"].get("targets", {}))
        report["config"]["grid_seconds"] = {
            "previous": previous["config"].get("grid_seconds"),
            "this run": report["config"]["grid_seconds"],
        }
        report.update({k: previous[k] for k in EXTRAS if k in previous})
    for device in devices:
        target, optimum = target_accuracy(table, device, args.acc, args.budget)
        report["devices"].setdefault(device, {})
        for name in searchers:
            runs = grid[device][name]
            rec = summarise(
                [r["best"] for r in runs],
                [r["hit"] for r in runs],
                [r["infeasible"] for r in runs],
                args.trials,
            )
            rec["seconds_per_run"] = round(float(np.mean([r["seconds"] for r in runs])), 2)
            rec["fallback_share"] = round(
                float(np.mean([r["stats"].get("explored", 0) / args.trials for r in runs])), 4
            )
            rec["stats"] = {k: int(sum(r["stats"].get(k, 0) for r in runs)) for k in runs[0]["stats"]}
            rec["seeds"] = len(runs)
            report["devices"][device][name] = rec
        report["config"].setdefault("targets", {})[device] = {
            "target_ms": target,
            "best_feasible_accuracy": optimum,
        }
    print(
        f"grid: {len(devices)} devices x {len(searchers)} searchers x {args.seeds} seeds x {args.trials} "
        f"trials in {grid_seconds:.0f} s ({args.workers} workers)"
    )
    print_table({d: {k: v for k, v in s.items() if not k.startswith("_")} for d, s in report["devices"].items()})

    if args.tune_seeds > 0:
        start = time.perf_counter()
        comparison = tune_comparison(
            table,
            devices[0],
            args.tune_searchers,
            range(args.tune_seeds),
            args.tune_trials,
            args.tune_concurrency,
            args.acc,
            options,
            args.budget,
        )
        comparison["seconds"] = round(time.perf_counter() - start, 1)
        report["tune"] = comparison
        print(
            f"\nRay Tune adapter vs in-process loop ({devices[0]}, {args.tune_seeds} seeds, "
            f"{args.tune_trials} trials, concurrency {args.tune_concurrency}, {comparison['seconds']:.0f} s):"
        )
        for name in args.tune_searchers:
            for how in ("tune", "in_process"):
                rec = comparison[name][how]
                cells = " ".join(f"@{k}={v:.2f}" for k, v in rec["best_at"].items() if v is not None)
                print(f"  {name:8} {how:10} {cells}  trials_to_target={rec['trials_to_target']}")

    if args.proposal_cost or args.proposal_cost_only:
        report["proposal_cost"] = proposal_cost(table, devices[0], args.acc, args.budget)
        print(f"\nPPO proposal cost: {report['proposal_cost']}")
        report["proposal_cost_nasfpn"] = nasfpn_proposal_cost()
        print(f"PPO proposal cost on NAS-FPN: {report['proposal_cost_nasfpn']}")

    report = stamp(report)
    if merged_runs:
        report["runs"] = [*merged_runs, {k: report[k] for k in PROVENANCE}]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
