"""Is the demo dataset learnable but not trivial? Majority vs per-pixel classifiers vs a tiny CNN.

A search over decoders is only meaningful when spatial context pays: the per-pixel models (a
logistic regression and a small MLP over the bands) should beat the majority class but stay far
from perfect, and a small CNN that sees shapes and shadows should beat them. Prints a table and
writes ``bench/results/demo_learnability.json``.

    python bench/demo_learnability.py [--size 64] [--bands 4] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import stamp  # noqa: E402
from trainers.datasets import SegmentationDataset  # noqa: E402
from trainers.demo_data import DEFAULT_CHIPS, write_demo_dataset  # noqa: E402


def _stack(ds: SegmentationDataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys)


def _scores(pred: torch.Tensor, target: torch.Tensor, ignore: int) -> dict[str, float]:
    keep = target != ignore
    p, t = pred[keep], target[keep]
    ious = []
    for c in (0, 1):
        inter = ((p == c) & (t == c)).sum().item()
        union = ((p == c) | (t == c)).sum().item()
        ious.append(inter / union if union else 0.0)
    return {"pixel_acc": (p == t).float().mean().item(), "building_iou": ious[1], "miou": sum(ious) / 2}


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, ignore: int) -> nn.Module:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx], ignore_index=ignore)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = write_demo_dataset(Path(tmp) / "demo", size=args.size, bands=args.bands, seed=args.seed)
        gen_s = time.perf_counter() - t0
        train, test = SegmentationDataset(root, "train"), SegmentationDataset(root, "test")
        xtr, ytr = _stack(train)
        xte, yte = _stack(test)
    ignore, c = train.ignore_index, train.in_chans
    rows = []
    majority = int(np.argmax(train.class_pixels()))
    rows.append({"model": "majority", **_scores(torch.full_like(yte, majority), yte, ignore)})
    models = {
        "logistic_pixel": nn.Conv2d(c, 2, 1),
        "mlp_pixel": nn.Sequential(
            nn.Conv2d(c, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(), nn.Conv2d(32, 2, 1)
        ),
        "tiny_cnn": nn.Sequential(
            nn.Conv2d(c, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 24, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(24, 24, 3, padding=4, dilation=4), nn.ReLU(), nn.Conv2d(24, 2, 1),
        ),
    }  # fmt: skip
    for name, model in models.items():
        t0 = time.perf_counter()
        model = _train(model, xtr, ytr, args.steps, ignore)
        with torch.no_grad():
            pred = model(xte).argmax(1)
        rows.append(
            {"model": name, **_scores(pred, yte, ignore), "train_s": round(time.perf_counter() - t0, 1)}
        )
    print(f"demo set: {len(train)} train / {len(test)} test chips of {args.size} px, {c} bands "
          f"(generated in {gen_s:.1f} s); {args.steps} steps of 16 chips, 1 CPU thread")  # fmt: skip
    print(f"{'model':<16}{'pixel_acc':>10}{'bldg_iou':>10}{'miou':>8}")
    for r in rows:
        print(f"{r['model']:<16}{r['pixel_acc']:>10.3f}{r['building_iou']:>10.3f}{r['miou']:>8.3f}")
    out = Path(__file__).resolve().parent / "results" / "demo_learnability.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "size": args.size,
        "bands": args.bands,
        "steps": args.steps,
        "seed": args.seed,
        "chips": DEFAULT_CHIPS,
    }
    out.write_text(json.dumps(stamp({"config": config, "rows": rows}), indent=1))


if __name__ == "__main__":
    main()
