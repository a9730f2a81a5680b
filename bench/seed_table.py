"""Does a latency-constrained search beat the hand-built decoder on real imagery? The seed table.

    python bench/seed_table.py --mode cpu        # at most 60 minutes on 2 CPU cores
    python bench/seed_table.py --mode full       # bigger machines
    python bench/seed_table.py --mode cpu --data DIR   # any dataset made by `geonas data import`

On one backbone and one device profile, every model gets the same stage-1 and stage-2 budget, and
every experiment goes through the product as a user's would (the REST API, a Ray Job per experiment,
Ray Tune stage 1 with the latency meter, Ray Train stage 2 from the stage-1 weights):

- ``unet``, ``fpn``: segmentation-models-pytorch baselines on the same backbone (in ``nas``'s first seed);
- ``nas``: PPO without a latency target;
- ``nas_latency``: PPO with a hard target of ``--target-ratio`` x the UNet's stage-1 latency (measured by
  the same meter, in the first experiment);
- ``random_latency``: random search with the same hard target and trial budget: the control.

Searched rows run for every seed. The search space searches the number of cells and the decoder
width as well as the cells, so latency varies several-fold. The bench fails (exit 2) when what it
measures did not happen: architectures spanning less than ``MIN_LATENCY_SPAN`` x in latency, a
constrained experiment with no infeasible proposal, an unconstrained best already under the target,
or a PPO controller updated fewer than ``MIN_PPO_UPDATES`` times. It exits 1 when it ran but a goal
of the issue is not met, and writes ``bench/results/seed_table.json`` either way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import stamp  # noqa: E402

MIN_LATENCY_SPAN = 3.0  # max / min stage-1 latency over every searched architecture measured
MIN_PPO_UPDATES = 4
MIN_INFEASIBLE_SHARE = 0.2  # the goal for the constrained experiments


@dataclass(frozen=True)
class Mode:
    chip: int
    backbone: str
    num_cells: tuple[int, ...]
    channels: tuple[int, ...]
    trials: int
    subset: int
    val_subset: int
    epochs1: int
    epochs2: int
    stage2_subset: int | None  # None: the whole training split
    ppo_batch: int  # PPO updates after this many rewards
    seeds: tuple[int, ...]
    batch_size: int = 16
    lr: float = 0.003


MODES = {
    "cpu": Mode(
        chip=64,
        backbone="mobilenetv3_small_100",
        num_cells=(2, 4, 6, 8),
        channels=(16, 32, 64, 128, 256),
        trials=24,
        subset=500,
        val_subset=300,
        epochs1=3,
        epochs2=3,
        stage2_subset=2000,
        ppo_batch=5,
        seeds=(0, 1),
    ),
    "full": Mode(
        chip=256,
        backbone="mobilenetv3_large_100",
        num_cells=(3, 5, 7, 9),
        channels=(32, 64, 128, 256),
        trials=100,
        subset=4000,
        val_subset=1000,
        epochs1=5,
        epochs2=40,
        stage2_subset=None,
        ppo_batch=10,
        seeds=(0, 1, 2),
    ),
}
# a few minutes: checks the bench's own plumbing, says nothing about the goals
MODES["smoke"] = Mode(
    chip=64, backbone="mobilenetv3_small_100", num_cells=(2, 8), channels=(16, 256), trials=6, subset=32,
    val_subset=32, epochs1=2, epochs2=1, stage2_subset=64, ppo_batch=2, seeds=(0,),
)  # fmt: skip
ORDER = {"unet": 0, "fpn": 1, "random_latency": 2, "nas": 3, "nas_latency": 4}


def _fingerprint() -> str:
    """The latency meter's name for this machine (its cache key), beside provenance's ``machine``."""
    from search_spaces.latency.machine import machine_fingerprint

    return machine_fingerprint("cpu-1threads")


def experiment_spec(mode: Mode, data: Path, name: str, seed: int, searcher: str, device: str, **extra) -> dict:
    options = {"batch_size": mode.ppo_batch} if searcher == "ppo" else {}
    return {
        "name": name,
        "dataset": {"path": str(data)},
        "backbone": mode.backbone,
        "search_space": {
            "levels": [2, 3, 4, 5],
            "num_cells": list(mode.num_cells),
            "channels": list(mode.channels),
            "ops": ["sum", "global_attention"],
        },
        "searcher": {"name": searcher, "options": options},
        "budget": {"trials": mode.trials, "concurrency": 1},
        "latency": {"device": device},
        "stage1": {
            "subset": mode.subset,
            "val_subset": mode.val_subset,
            "epochs": mode.epochs1,
            "batch_size": mode.batch_size,
            "lr": mode.lr,
        },
        "stage2": {"top_k": 1, "epochs": mode.epochs2, "subset": mode.stage2_subset, "workers": 1, "init": "stage1"},
        "seed": seed,
        **extra,
    }


def searcher_updates(spec: dict, storage: str, experiment_id: str) -> int | None:
    """How many times the searcher learnt, from the state the driver saved (None: it has no policy)."""
    from search_spaces.nasfpn import NasFpnSpace
    from search_spaces.searchers import create_searcher
    from search_spaces.searchers.tune import TuneAdapter
    from service.driver import search_space_config
    from service.specs import ExperimentSpec

    parsed = ExperimentSpec.model_validate(spec)
    space = NasFpnSpace(search_space_config(parsed))
    inner = create_searcher(parsed.searcher.name, space, seed=parsed.seed, **parsed.searcher.options)
    adapter = TuneAdapter(inner, to_config=lambda tokens: {})
    path = Path(storage) / f"experiment-{experiment_id}.searcher.pkl"
    if not path.exists():
        return None
    adapter.restore(str(path))
    return getattr(inner, "updates", None)


def run(api, spec: dict) -> dict:
    created = api.submit(spec)
    started = time.perf_counter()
    while (exp := api.experiment(created["id"]))["state"] not in ("completed", "failed", "cancelled"):
        time.sleep(5)
    print(f"  {spec['name']}: {exp['state']} in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    if exp["state"] != "completed":
        raise SystemExit(f"experiment {spec['name']} ended {exp['state']}: {exp.get('error')}")
    return exp


def experiment_stats(api, exp: dict, storage: str, target: float | None) -> dict:
    trials = [t for t in api.trials(exp["id"]) if t["stage"] == 1 and t["kind"] == "searched"]
    finished = [t for t in trials if t["state"] in ("completed", "pruned", "failed")]
    pruned = [t for t in finished if t["state"] == "pruned"]
    rewards = [t["reward"] for t in finished if t["state"] == "completed" and t["reward"] is not None]
    completed = [t for t in finished if t["state"] == "completed" and t["miou"] is not None]
    best = max(completed, key=lambda t: t["reward"] or -1.0, default=None)
    return {
        "trials": len(finished),
        "failed": sum(t["state"] == "failed" for t in finished),
        "infeasible_share": len(pruned) / len(finished) if finished else 0.0,
        "searcher_updates": searcher_updates(exp["spec"], storage, exp["id"]),
        "best_stage1_reward": max(rewards, default=None),
        "best_stage1_latency_ms": best["latency_ms"] if best else None,
        "stage1_latencies_ms": [t["latency_ms"] for t in finished if t["latency_ms"] is not None],
        "target_ms": target,
        "experiment_id": exp["id"],
    }


def model_rows(api, exp: dict, searched_name: str, seed: int) -> list[dict]:
    trials = {t["id"]: t for t in api.trials(exp["id"]) if t["stage"] == 2}
    rows = []
    for m in api.models(exp["id"]):
        name = m["descriptor"]["baseline"] if m["kind"] == "baseline" else searched_name
        check = m["metrics"].get("latency_check") or {}
        rows.append(
            {
                "model": name,
                "seed": seed,
                "miou": m["miou"],
                "latency_ms": m["latency_ms"],
                "stage1_latency_ms": check.get("stage1_ms"),
                "latency_flags": check.get("flags", []),
                "iou": m["metrics"].get("iou"),
                "pixel_accuracy": m["metrics"].get("pixel_accuracy"),
                "arch_hash": m["arch_hash"],
                "params": (trials.get(m["trial_id"]) or {}).get("params"),
                "stage2_init": m["training"].get("init"),
                "stage2_first_epoch_loss": m["training"].get("first_epoch_loss"),
            }
        )
    return rows


def checks(result: dict, target: float, unet_ms: float) -> tuple[list[str], dict[str, bool]]:
    """(why the run says nothing, when it does not; the issue's goals, met or not)."""
    vacuous: list[str] = []
    exps = result["experiments"]
    lat = [x for e in exps.values() for x in e["stage1_latencies_ms"]]
    span = max(lat) / min(lat) if lat else 0.0
    result["latency_span"] = span
    if span < MIN_LATENCY_SPAN:
        vacuous.append(f"searched architectures span only {span:.2f}x in latency (need {MIN_LATENCY_SPAN}x)")
    for key, e in exps.items():
        model = key.split("/")[0]
        if model in ("nas_latency", "random_latency") and e["infeasible_share"] == 0:
            vacuous.append(f"{key}: no proposal was infeasible: the target did not bind")
        if model.startswith("nas") and (e["searcher_updates"] or 0) < MIN_PPO_UPDATES:
            vacuous.append(f"{key}: PPO updated {e['searcher_updates']} times (need {MIN_PPO_UPDATES})")
        if model == "nas" and e["best_stage1_latency_ms"] is not None and e["best_stage1_latency_ms"] <= target:
            vacuous.append(f"{key}: the unconstrained best ({e['best_stage1_latency_ms']:.2f} ms) is already "
                           f"under the target ({target:.2f} ms)")
    rows = result["rows"]
    unet = next((r for r in rows if r["model"] == "unet"), None)
    constrained = [r for r in rows if r["model"] == "nas_latency"]
    randoms = [r for r in rows if r["model"] == "random_latency"]
    if unet is None or not constrained:
        vacuous.append("no unet or nas_latency model was registered")
        return vacuous, {}
    goals = {
        "nas_latency_beats_unet_every_seed": all(
            r["miou"] > unet["miou"] and r["latency_ms"] <= result["target_ratio"] * unet["latency_ms"]
            for r in constrained
        ),
        "nas_latency_mean_at_least_random": bool(randoms)
        and statistics.mean(r["miou"] for r in constrained) >= statistics.mean(r["miou"] for r in randoms),
        "target_binds": all(
            e["infeasible_share"] >= MIN_INFEASIBLE_SHARE
            for k, e in exps.items()
            if k.split("/")[0] in ("nas_latency", "random_latency")
        ),
    }
    return vacuous, goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="cpu")
    parser.add_argument("--data", default=None, help="a dataset made by `geonas data import` (default: Dubai)")
    parser.add_argument("--backbone", default=None, help="override the mode's backbone")
    parser.add_argument("--device", default="cpu-1threads", help="latency device profile")
    parser.add_argument("--target-ratio", type=float, default=0.6)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the mode's)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", default=None)
    parser.add_argument("--out", default="bench/results/seed_table.json")
    args = parser.parse_args()
    mode = MODES[args.mode]
    if args.backbone:
        mode = Mode(**{**asdict(mode), "backbone": args.backbone})
    if args.seeds:
        mode = Mode(**{**asdict(mode), "seeds": tuple(int(s) for s in args.seeds.split(","))})

    from cluster.connect import connect
    from service.app import create_app
    from service.client import ApiClient
    from service.demo import ServerThread
    from service.jobs import JobLauncher
    from service.settings import Settings
    from trainers.catalog import prepare_dataset

    work = Path(args.work or tempfile.mkdtemp(prefix="geonas-seed-"))
    started = time.perf_counter()
    if args.data:
        data = Path(args.data).resolve()
        dataset_name = data.name
    else:
        data = prepare_dataset("dubai-aerial", work / "dubai", chip_size=mode.chip)
        dataset_name = "dubai-aerial"
    settings = Settings(home=work / "home")
    storage = settings.resolved_storage_path
    rows: list[dict] = []
    experiments: dict[str, dict] = {}
    cluster = connect(None, num_cpus=args.cpus, home=settings.home)
    try:
        app = create_app(settings, launcher=JobLauncher(cluster.dashboard_url, settings))
        with ServerThread(app) as server:
            api = ApiClient(server.url, timeout=120)
            first, *rest = mode.seeds
            # 1. nas, first seed, with the baselines: the UNet's stage-1 latency sets the target
            baselines = {"baselines": ["unet", "fpn"]}
            spec = experiment_spec(mode, data, f"seed-nas-{first}", first, "ppo", args.device, **baselines)
            exp = run(api, spec)
            unet_trial = next(
                (t for t in api.trials(exp["id"]) if t["stage"] == 1 and (t["arch"] or {}).get("baseline") == "unet"),
                None,
            )
            if unet_trial is None or not unet_trial["latency_ms"]:
                raise SystemExit("the UNet baseline has no stage-1 latency: cannot set the target")
            unet_ms = float(unet_trial["latency_ms"])
            target = args.target_ratio * unet_ms
            print(f"target {target:.2f} ms = {args.target_ratio} x UNet {unet_ms:.2f} ms (stage 1, same meter)")
            experiments[f"nas/{first}"] = experiment_stats(api, exp, storage, None)
            rows += model_rows(api, exp, "nas", first)
            hard = {"device": args.device, "target_ms": target, "reward": "hard", "margin": 0.0}
            plan = [("nas", s, "ppo", {"device": args.device}) for s in rest]
            for seed in mode.seeds:
                plan += [("nas_latency", seed, "ppo", hard), ("random_latency", seed, "random", hard)]
            for model, seed, searcher, latency in plan:
                spec = experiment_spec(mode, data, f"seed-{model}-{seed}", seed, searcher, args.device)
                spec["latency"] = latency
                exp = run(api, spec)
                experiments[f"{model}/{seed}"] = experiment_stats(api, exp, storage, latency.get("target_ms"))
                rows += model_rows(api, exp, model, seed)
    finally:
        cluster.stop()

    rows.sort(key=lambda r: (ORDER.get(r["model"], 9), r["seed"]))
    result: dict[str, Any] = stamp({
        "mode": args.mode,
        "dataset": dataset_name,
        "settings": {**asdict(mode), "device": args.device, "target_ratio": args.target_ratio, "margin": 0.0},
        "target_ratio": args.target_ratio,
        "target_ms": target,
        "unet_stage1_ms": unet_ms,
        "rows": rows,
        "experiments": experiments,
    })
    result["machine"]["fingerprint"] = _fingerprint()
    vacuous, goals = checks(result, target, unet_ms)
    result["vacuous"] = vacuous
    result["goals"] = goals
    result["wall_s"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))

    unet_row = next((r for r in rows if r["model"] == "unet"), None)
    print(f"\n{'model':<15}{'seed':>5}{'test mIoU':>10}{'lat ms':>8}{'s1 ms':>8}{'x UNet':>8}  flags / init")
    for r in rows:
        ratio = r["latency_ms"] / unet_row["latency_ms"] if unet_row and r["latency_ms"] else float("nan")
        s1 = r["stage1_latency_ms"] or float("nan")
        extra = " ".join(r["latency_flags"]) or "-"
        print(f"{r['model']:<15}{r['seed']:>5}{r['miou']:>10.3f}{r['latency_ms']:>8.2f}{s1:>8.2f}{ratio:>8.2f}  "
              f"{extra} / {r['stage2_init']}")
    print(f"\n{'experiment':<18}{'trials':>7}{'infeasible':>11}{'updates':>8}{'best s1 reward':>15}")
    for key, e in experiments.items():
        best = e["best_stage1_reward"]
        print(f"{key:<18}{e['trials']:>7}{e['infeasible_share']:>11.2f}{e['searcher_updates'] or 0:>8}"
              f"{best if best is None else round(best, 3)!s:>15}")
    print(f"\ntarget {target:.2f} ms ({args.target_ratio} x UNet {unet_ms:.2f} ms); latency span "
          f"{result['latency_span']:.2f}x; wall {result['wall_s'] / 60:.1f} min; wrote {args.out}")
    for name, met in goals.items():
        print(f"goal {name}: {'met' if met else 'NOT MET'}")
    if vacuous:
        print("\nTHE BENCH SAYS NOTHING:\n  " + "\n  ".join(vacuous), file=sys.stderr)
        raise SystemExit(2)
    if not all(goals.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
