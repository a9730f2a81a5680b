"""The stage-1 trial: build an architecture, measure its latency, train it briefly, report mIoU.

:func:`run_trial` is a plain function of a config and a context that reports through a callback, so
a unit test can call it directly; :func:`stage1_trainable` is the same thing as a Ray Tune function
trainable (the driver binds the context with ``tune.with_parameters``). The context names the splits;
the trial takes its chips from its node's cache (:mod:`trainers.trial_data`: decoded once per node),
and asks the experiment's latency meter for its latency, training meanwhile when no hard target needs
the number first. A trial pruned by a hard target reports no mIoU (it never trained); a trained one
keeps the weights of its best epoch in the context's ``weights_dir``, where stage 2 starts from them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from search_spaces.builder import model_from_descriptor
from search_spaces.nasfpn import ArchSpec
from search_spaces.rewards import compute_reward, is_infeasible

from .loop import evaluate, pick_device, train_epoch
from .trial_data import Quarantine, SplitRef, load_split

__all__ = [
    "LatencySettings",
    "Stage1Context",
    "run_trial",
    "stage1_trainable",
    "descriptor_key",
    "best_weights_path",
]


@dataclass(frozen=True)
class LatencySettings:
    profile: str = "cpu-1threads"
    target_ms: float | None = None
    reward: str = "soft"
    margin: float = 0.1
    batch_size: int = 1
    tile_size: int | None = None
    cache_path: str | None = None
    meter: bool = False  # measure in the profile's LatencyMeter actor (the driver turns this on)
    meter_cpus: float | None = None  # CPUs the meter holds (None: the profile's threads)
    harness: dict[str, Any] = field(default_factory=dict)  # measure_latency keyword arguments


@dataclass
class Stage1Context:
    """Everything a trial needs besides its architecture; built once per experiment by the driver.

    ``train`` and ``val`` are datasets, or :class:`~trainers.trial_data.SplitRef` s that the trial
    loads itself (decoded once per node; unreadable chips go to ``quarantine``).
    """

    train: Dataset | SplitRef
    val: Dataset | SplitRef
    in_chans: int
    num_classes: int
    chip_size: int
    ignore_index: int = 255
    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    latency: LatencySettings = field(default_factory=LatencySettings)
    backbone_weights: str | None = None
    threads: int = 1
    quarantine: str | None = None  # folder of the experiment's unreadable chips
    weights_dir: str | None = None  # each trial's best weights go here, for stage 2 to start from

    def datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val), loading the referenced splits in this process on first use."""
        store = Quarantine(self.quarantine) if self.quarantine else None
        return tuple(load_split(d, store) if isinstance(d, SplitRef) else d for d in (self.train, self.val))


def best_weights_path(weights_dir: str | os.PathLike, arch_hash: str) -> Path:
    """Where a trial keeps the weights of its best epoch (by validation mIoU): stage 2 starts there."""
    return Path(weights_dir) / f"{arch_hash}.safetensors"


def save_best_weights(model: torch.nn.Module, path: Path) -> None:
    """Write the weights atomically (temp file + rename): stage 2 never reads half a file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in getattr(model, "module", model).state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def descriptor_key(descriptor: dict[str, Any]) -> tuple[str, str]:
    """(kind, identity hash) of a model descriptor: searched architectures by canonical hash."""
    if "arch" in descriptor:
        return "searched", ArchSpec.from_dict(descriptor["arch"]).hash
    return "baseline", f"{descriptor['baseline']}-{descriptor['backbone']}"


def _start_latency(
    model: torch.nn.Module, descriptor: dict[str, Any], key: str, ctx: Stage1Context
) -> Callable[[], float]:
    """Start measuring the median latency in ms; the returned callable waits for the number.

    On a cluster the profile's meter actor measures on cores of its own, so the trial can train while
    it waits in the meter's queue; without a meter the model is measured here, before training, since
    measuring beside this process's own training would time the contention, not the model.
    """
    tile = ctx.latency.tile_size or ctx.chip_size
    shape = (ctx.latency.batch_size, ctx.in_chans, tile, tile)
    if ctx.latency.meter:
        import ray

        from search_spaces.latency.meter import MeterPlacement, request_remote

        placement = MeterPlacement(num_cpus=ctx.latency.meter_cpus, harness=dict(ctx.latency.harness))
        ref = request_remote(
            descriptor, ctx.in_chans, ctx.num_classes, shape, ctx.latency.profile, ctx.latency.cache_path, placement
        )
        return lambda: float(ray.get(ref, timeout=600.0)["median_ms"])

    from search_spaces.latency.cache import LatencyCache, LatencyKey, cached_latency
    from search_spaces.latency.harness import measure_latency

    cache = LatencyCache(ctx.latency.cache_path) if ctx.latency.cache_path else None
    result = cached_latency(
        cache,
        LatencyKey.of(key, ctx.latency.profile, shape),
        lambda: measure_latency(model, shape, ctx.latency.profile, **ctx.latency.harness),
    )
    return lambda: float(result.median_ms)


class _Latency:
    """The trial's latency number, fetched once, with the seconds the trial spent waiting for it."""

    def __init__(self, wait: Callable[[], float]) -> None:
        self._wait, self.value, self.waited_s = wait, None, 0.0

    def get(self) -> float:
        if self.value is None:
            started = time.perf_counter()
            self.value = self._wait()
            self.waited_s = time.perf_counter() - started
        return self.value


def _reward(miou: float, latency_ms: float, settings: LatencySettings) -> float:
    if settings.target_ms is None:
        return miou
    return compute_reward(settings.reward, miou, latency_ms, settings.target_ms)


Report = Callable[..., None]


def run_trial(config: dict[str, Any], ctx: Stage1Context, report: Report, resume: dict[str, Any] | None = None) -> None:
    """Measure, maybe prune, then train ``ctx.epochs`` epochs, reporting after each one.

    ``report(metrics, state=...)`` receives the training state (weights, optimiser, epoch) after
    every epoch so that a retried trial continues from ``resume`` instead of starting over.
    """
    torch.set_num_threads(ctx.threads)
    torch.manual_seed(ctx.seed)
    descriptor = {k: v for k, v in config.items() if k in ("arch", "baseline", "backbone")}
    kind, key = descriptor_key(descriptor)
    model = model_from_descriptor(descriptor, ctx.in_chans, ctx.num_classes, ctx.backbone_weights)
    params = sum(p.numel() for p in model.parameters())
    common = {"arch_hash": key, "kind": kind, "params": params, "latency_device": ctx.latency.profile}

    started = time.perf_counter()
    latency = _Latency(_start_latency(model, descriptor, key, ctx))
    prunable = ctx.latency.target_ms is not None and ctx.latency.reward == "hard" and kind == "searched"
    if prunable and is_infeasible(latency.get(), ctx.latency.target_ms, ctx.latency.margin):
        # never trained, so no mIoU: the searcher gets the reward of an untrained model, and the
        # early-stopping scheduler ignores pruned results (trainers/early_stopping.py)
        report(
            {
                **common,
                "epoch": 0,
                "miou": None,
                "latency_ms": latency.value,
                "reward": _reward(0.0, latency.value, ctx.latency),
                "pruned": True,
                "latency_s": time.perf_counter() - started,
                "train_s": 0.0,
            }
        )
        return

    train_set, val_set = ctx.datasets()  # an unreadable chip fails this trial here, naming the file
    device = pick_device()
    model = device.prepare(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=ctx.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(ctx.seed)
    train_loader = DataLoader(train_set, batch_size=ctx.batch_size, shuffle=True, generator=generator, drop_last=False)
    val_loader = DataLoader(val_set, batch_size=max(ctx.batch_size, 16), shuffle=False)
    first, best_miou = 1, float("-inf")
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        first = int(resume["epoch"]) + 1
        best_miou = float(resume.get("best_miou", best_miou))
    for epoch in range(first, ctx.epochs + 1):
        t0 = time.perf_counter()
        stats = train_epoch(model, train_loader, optimizer, device, ctx.ignore_index)
        train_s = time.perf_counter() - t0
        matrix = evaluate(model, val_loader, ctx.num_classes, device, ctx.ignore_index)
        eval_s = time.perf_counter() - t0 - train_s
        miou = matrix.miou()
        latency_ms = latency.get()  # measured meanwhile on the meter's own cores
        if ctx.weights_dir and np.isfinite(miou) and miou > best_miou:
            best_miou = miou
            save_best_weights(model, best_weights_path(ctx.weights_dir, key))
        report(
            {
                **common,
                "epoch": epoch,
                "miou": miou,
                "pixel_accuracy": matrix.pixel_accuracy(),
                "iou": [None if np.isnan(v) else float(v) for v in matrix.iou()],
                "loss": stats["loss"],
                "latency_ms": latency_ms,
                "reward": _reward(miou, latency_ms, ctx.latency),
                "pruned": False,
                "latency_s": latency.waited_s if epoch == first else 0.0,  # time this trial waited
                "train_s": train_s,
                "eval_s": eval_s,
                "chips_per_s": stats["samples"] / max(train_s, 1e-9),
            },
            state={
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "best_miou": best_miou,
            },
        )


def stage1_trainable(config: dict[str, Any], context: Stage1Context) -> None:
    """Ray Tune entry point: :func:`run_trial` reporting through ``tune.report``.

    Each epoch's state goes into a Tune checkpoint, so a trial retried after a crash (see the
    driver's ``FailureConfig``) resumes from its last finished epoch.
    """
    import tempfile

    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()
    os.environ.setdefault("OMP_NUM_THREADS", str(context.threads))
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(os.path.join(folder, "state.pt"), map_location="cpu", weights_only=False)

    def report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        metrics = {**metrics, "node_id": node_id}
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="geonas-s1-") as folder:
            torch.save(state, os.path.join(folder, "state.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    run_trial(config, context, report, resume=resume)
