"""Is one searcher's lead over another beyond the noise of a few seeds? Read from ``bench/searchers.py``'s results.

A median over 20 seeds of the trials to target moves a lot from one set of seeds to another (one
searcher's 20 searches on pixel3 range from 24 to 451 trials), so "A needs fewer median trials than B"
on one set of seeds can be luck. For each device this reads the per-seed trials to target of two
searchers (``--a``, ``--b``) from one or more result files of disjoint seeds, and reports per file and
pooled over all of them: both medians, a 90 % bootstrap interval of the difference of the medians
(A minus B: negative is A ahead), and the two-sided Mann-Whitney p-value that the two searchers' trials
come from one distribution. A search that never reached the target counts as one trial past the budget
(worse than every hit, as a rank test needs). Files whose seeds overlap are refused: pooling a seed twice
would fake certainty.

    python bench/searchers_compare.py        # writes bench/results/searchers_compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import stamp  # noqa: E402

DEFAULT_FILES = (
    "bench/results/searchers.json",
    "bench/results/searchers-seeds-100-119.json",
    "bench/results/searchers-seeds-200-239.json",
)


def seeds_of(config: dict, searcher: str) -> range:
    """The seeds a result file ran ``searcher`` on (a combined file names its parts in ``combined_from``)."""
    for part in reversed(config.get("combined_from") or [config]):  # a later part replaced an earlier one
        if searcher in part.get("searchers", [searcher]) and part.get("seeds", 0) >= 1:
            first = part.get("first_seed") or 0
            return range(first, first + int(part["seeds"]))
    raise SystemExit(f"cannot tell which seeds {searcher} ran on from the file's config")


def trials(record: dict, budget: int) -> np.ndarray:
    """Per-seed trials to target; a miss counts as ``budget + 1``."""
    return np.array([budget + 1 if t is None else t for t in record["trials_to_target"]], dtype=float)


def compare(a: np.ndarray, b: np.ndarray, budget: int, rng: np.random.Generator, draws: int) -> dict:
    """Both medians, the difference (a minus b) with its 90 % bootstrap interval, Mann-Whitney p, misses."""
    boot = np.median(rng.choice(a, (draws, len(a))), 1) - np.median(rng.choice(b, (draws, len(b))), 1)
    low, high = np.percentile(boot, [5, 95])
    return {
        "seeds": [len(a), len(b)],
        "median": [float(np.median(a)), float(np.median(b))],
        "difference": float(np.median(a) - np.median(b)),
        "difference_90": [float(low), float(high)],
        "mann_whitney_p": round(float(mannwhitneyu(a, b).pvalue), 3),
        "misses": [int((a > budget).sum()), int((b > budget).sum())],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument("--a", default="ppo")
    parser.add_argument("--b", default="tpe")
    parser.add_argument("--draws", type=int, default=10000, help="bootstrap resamples")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "searchers_compare.json"))
    args = parser.parse_args(argv)

    results = [json.loads((ROOT / f).read_text()) for f in args.files]
    budgets = {r["config"]["trials"] for r in results}
    if len(budgets) != 1:
        raise SystemExit(f"the files ran different budgets {sorted(budgets)}: their trials cannot be pooled")
    budget = budgets.pop()
    seeds: dict[str, set[int]] = {args.a: set(), args.b: set()}
    file_seeds: dict[tuple[str, str], range] = {}  # (file, searcher) -> the seeds it ran there
    for f, r in zip(args.files, results, strict=True):
        for name in seeds:
            file_seeds[f, name] = seeds_of(r["config"], name)
            these = set(file_seeds[f, name])
            if seeds[name] & these:
                raise SystemExit(
                    f"{f} repeats seeds {sorted(seeds[name] & these)} of {name}: pass files of disjoint seeds"
                )
            seeds[name] |= these
    devices = [d for d in results[0]["devices"] if all(d in r["devices"] for r in results)]
    rng = np.random.default_rng(0)
    report: dict[str, dict] = {}
    for device in devices:
        per_file, pooled_a, pooled_b = {}, [], []
        for f, r in zip(args.files, results, strict=True):
            runs = r["devices"][device]
            if args.a not in runs or args.b not in runs:
                raise SystemExit(f"{f} has no {args.a} or no {args.b} on {device}")
            a, b = trials(runs[args.a], budget), trials(runs[args.b], budget)
            for name, x in ((args.a, a), (args.b, b)):
                if len(x) != len(file_seeds[f, name]):
                    raise SystemExit(f"{f}: {name} on {device} has {len(x)} searches, not one per seed of its config")
            per_file[Path(f).name] = compare(a, b, budget, rng, args.draws)
            pooled_a.append(a)
            pooled_b.append(b)
        report[device] = {
            "files": per_file,
            "pooled": compare(np.concatenate(pooled_a), np.concatenate(pooled_b), budget, rng, args.draws),
        }

    pooled = [report[d]["pooled"] for d in devices]
    result = {
        "a": args.a,
        "b": args.b,
        "files": list(args.files),
        "seeds": {name: sorted(s) for name, s in seeds.items()},
        "budget": budget,
        "devices": report,
        "summary": {
            "a_not_behind_pooled": sum(p["difference"] <= 0 for p in pooled),
            "a_ahead_beyond_noise": [d for d, p in zip(devices, pooled, strict=True) if p["difference_90"][1] < 0],
            "a_behind_beyond_noise": [d for d, p in zip(devices, pooled, strict=True) if p["difference_90"][0] > 0],
        },
        "note": "difference = median trials to target of a minus b (negative: a ahead); difference_90: 5th-95th "
        "percentile of that difference over bootstrap resamples of each searcher's seeds; a miss counts as "
        "budget + 1",
    }
    Path(args.out).write_text(json.dumps(stamp(result), indent=2) + "\n")
    print(f"median trials to target, {args.a} / {args.b}; difference with its 90 % bootstrap interval; Mann-Whitney p")
    for device in devices:
        cells = []
        for name, c in [*report[device]["files"].items(), ("pooled", report[device]["pooled"])]:
            lo, hi = c["difference_90"]
            a_b = f"{c['median'][0]:g} / {c['median'][1]:g}"
            cells.append(f"{name}: {a_b} ({c['difference']:+g} [{lo:+.0f}, {hi:+.0f}], p {c['mann_whitney_p']})")
        print(f"{device:14s} " + "; ".join(cells))
    s = result["summary"]
    ahead, behind = s["a_ahead_beyond_noise"] or "none", s["a_behind_beyond_noise"] or "none"
    counts = sorted({len(seeds[args.a]), len(seeds[args.b])}, reverse=True)
    print(f"pooled over {' / '.join(map(str, counts))} seeds: {args.a} needs no more median trials than {args.b} on "
          f"{s['a_not_behind_pooled']} of {len(devices)} devices; ahead beyond the 90 % interval on {ahead}, "
          f"behind beyond it on {behind}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
