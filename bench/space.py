"""How big the NAS-FPN space is, whether every token sequence decodes, and what a build costs.

    python bench/space.py [--samples 200] [--timed 20] [--out bench/results/space.json]

Prints a table and writes JSON with ``valid_share`` (share of token sequences drawn under the masks
that decode to a model that builds and runs: 100 % by construction), the size of the space (exact
count of token sequences, and of canonical architectures estimated from duplicates in a sample), and
build + forward time per architecture.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cost import model_cost  # noqa: E402
from bench.provenance import stamp  # noqa: E402
from search_spaces.builder import build_model  # noqa: E402
from search_spaces.nasfpn import NasFpnSpace, SearchSpaceConfig  # noqa: E402
from search_spaces.ops import list_ops  # noqa: E402
from search_spaces.tokens import sample_uniform  # noqa: E402


def count_sequences(space: NasFpnSpace) -> int:
    """Exact number of distinct valid token sequences (the masks depend only on pool size and a ≠ b)."""
    c = space.config
    levels, ops = len(c.levels), len(c.ops)
    total = 0
    for n in c.num_cells:
        per = 1
        for i in range(n):
            pool = levels + i
            per *= pool * (pool - 1) * levels * ops
        total += per
    return total * len(c.backbones) * len(c.channels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="token sequences to decode and build")
    parser.add_argument("--timed", type=int, default=20, help="of those, how many to time build + forward")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--backbone", default="mobilenetv3_small_050")
    parser.add_argument("--out", default="bench/results/space.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = SearchSpaceConfig(backbones=(args.backbone,), num_cells=(7,), channels=(32,), ops=tuple(list_ops()))
    space = NasFpnSpace(config)
    rng = np.random.default_rng(0)
    valid, hashes, build_s, forward_s, flops, params = 0, [], [], [], [], []
    x = torch.randn(1, args.bands, args.size, args.size)
    for i in range(args.samples):
        tokens = sample_uniform(space, rng)
        try:
            arch = space.decode(tokens)
            t0 = time.perf_counter()
            model = build_model(arch, args.bands, 2).eval()
            t1 = time.perf_counter()
            with torch.inference_mode():
                out = model(x)
            t2 = time.perf_counter()
            ok = out.shape == (1, 2, args.size, args.size) and bool(torch.isfinite(out).all())
        except Exception as exc:  # noqa: BLE001 - counting failures is the point
            print(f"sample {i} failed: {exc}")
            ok = False
        if ok:
            valid += 1
            hashes.append(arch.hash)
            if i < args.timed:
                build_s.append(t1 - t0)
                forward_s.append(t2 - t1)
                cost = model_cost(model, tuple(x.shape))
                flops.append(cost.flops)
                params.append(cost.params)

    sequences = count_sequences(space)
    result = {
        "config": {
            "backbone": args.backbone,
            "levels": list(config.levels),
            "num_cells": list(config.num_cells),
            "ops": list(config.ops),
            "input": list(x.shape),
        },
        "token_positions": len(space.sizes),
        "token_sequences": sequences,
        "token_sequences_log10": math.log10(sequences),
        "samples": args.samples,
        "valid_share": valid / args.samples,
        "distinct_canonical_in_sample": len(set(hashes)),
        "build_ms_median": 1000 * statistics.median(build_s),
        "forward_ms_median": 1000 * statistics.median(forward_s),
        "mflops_median": statistics.median(flops) / 1e6,
        "params_median": int(statistics.median(params)),
    }
    rows = [
        ("token positions", result["token_positions"]),
        ("valid token sequences", f"{sequences:.3e}"),
        ("sampled sequences", args.samples),
        ("valid share (decode + build + forward)", f"{100 * result['valid_share']:.1f} %"),
        ("distinct canonical archs in sample", result["distinct_canonical_in_sample"]),
        ("build time / arch (median)", f"{result['build_ms_median']:.1f} ms"),
        (f"forward 1×{args.bands}×{args.size}² (median)", f"{result['forward_ms_median']:.1f} ms"),
        ("MFLOPs (median)", f"{result['mflops_median']:.1f}"),
        ("params (median)", f"{result['params_median']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stamp(result), indent=2))


if __name__ == "__main__":
    main()
