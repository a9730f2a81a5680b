"""Stage 2: fine-tune one architecture on the full training split with Ray Train, evaluate on test.

:func:`finetune_loop` is the per-worker loop of a ``TorchTrainer`` (data parallel; AMP and
channels_last on CUDA; a checkpoint per epoch, resumed from the last one when the run restarts);
rank 0 evaluates on the test split at the end and hands back the weights in the final checkpoint.
:func:`run_finetune` runs it on the connected cluster and returns the metrics and the checkpoint.
:func:`finetune_candidate` is stage 2 of one selected stage-1 trial, as the driver runs it: fine-tune
(from the weights :func:`stage1_init` finds), then re-measure the latency on the experiment's meter and
recheck it against the target; export (:func:`trainers.export.export_model`) and registration
(:mod:`trainers.registration`) follow.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from search_spaces.builder import model_from_descriptor
from search_spaces.errors import GeonasError

from .loop import Device, evaluate, train_epoch

__all__ = [
    "FinetuneConfig",
    "finetune_loop",
    "run_finetune",
    "FinetuneResult",
    "load_init_weights",
    "stage1_init",
    "Finetuned",
    "finetune_candidate",
]

_STATE = "state.pt"
_METRICS = "metrics.json"


@dataclass
class FinetuneConfig:
    descriptor: dict[str, Any]
    data_root: str
    bands: list[str] | None = None
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    threads_per_worker: int = 1
    backbone_weights: str | None = None
    eval_split: str = "test"
    quarantine: str | None = None  # folder of unreadable chips: left out; a new one fails this attempt
    init_weights: str | None = None  # start from these weights (the stage-1 trial's best epoch); None: scratch
    subset: int | None = None  # seeded subset of the training split; None: all of it

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def settings(self) -> dict[str, Any]:
        """The training settings as recorded with the model: all but the descriptor (recorded on its own)."""
        return {k: v for k, v in asdict(self).items() if k != "descriptor"}


@dataclass
class FinetuneResult:
    metrics: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    in_chans: int = 0
    num_classes: int = 0
    bands: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)


def finetune_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from .trial_data import Quarantine, SplitRef, load_split

    cfg = FinetuneConfig.from_dict(config)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed + rank)
    quarantine = Quarantine(cfg.quarantine) if cfg.quarantine else None
    train = load_split(
        SplitRef(cfg.data_root, "train", tuple(cfg.bands) if cfg.bands else None, cfg.subset, cfg.seed), quarantine
    )
    device = Device(ray.train.torch.get_device())
    model = model_from_descriptor(cfg.descriptor, train.in_chans, train.num_classes, cfg.backbone_weights)
    if cfg.init_weights and ray.train.get_checkpoint() is None:
        load_init_weights(model, cfg.init_weights)
    if device.is_cuda:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    loader = ray.train.torch.prepare_data_loader(
        DataLoader(train, batch_size=cfg.batch_size, shuffle=True, drop_last=len(train) > cfg.batch_size)
    )

    start, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _STATE, map_location="cpu", weights_only=False)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = int(state["epoch"]), list(state["history"])

    def save(epoch: int, metrics: dict[str, Any]) -> Checkpoint | None:
        if rank != 0:
            return None
        folder = tempfile.mkdtemp(prefix="geonas-s2-")
        torch.save(
            {
                "model": _unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "history": history,
            },
            Path(folder) / _STATE,
        )
        (Path(folder) / _METRICS).write_text(json.dumps(metrics))
        return Checkpoint.from_directory(folder)

    for epoch in range(start + 1, cfg.epochs + 1):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        stats = train_epoch(model, loader, optimizer, device, train.ignore_index)
        scheduler.step()
        history.append({"epoch": epoch, "loss": stats["loss"], "train_s": time.perf_counter() - t0})
        metrics: dict[str, Any] = {"epoch": epoch, "loss": stats["loss"], "final": False}
        if epoch == cfg.epochs and rank == 0:
            metrics.update(_evaluate_split(_unwrap(model), cfg, device), final=True, history=history)
        ray.train.report(metrics, checkpoint=save(epoch, metrics), checkpoint_dir_name=f"epoch-{epoch:04d}")


def load_init_weights(model: torch.nn.Module, path: str) -> None:
    """Load a stage-1 trial's weights; they must fit the model exactly (same architecture, bands, classes)."""
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except (OSError, RuntimeError) as exc:  # safetensors reports a bad file as a RuntimeError-like error
        raise GeonasError(f"cannot read the stage-1 weights {path}: {exc}; use stage2.init: scratch") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise GeonasError(
            f"the stage-1 weights {path} do not fit this model: {str(exc)[:300]}; use stage2.init: scratch"
        ) from exc


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def _evaluate_split(model: torch.nn.Module, cfg: FinetuneConfig, device: Device) -> dict[str, Any]:
    from .trial_data import Quarantine, SplitRef, load_split

    quarantine = Quarantine(cfg.quarantine) if cfg.quarantine else None
    ref = SplitRef(cfg.data_root, cfg.eval_split, tuple(cfg.bands) if cfg.bands else None)
    split = load_split(ref, quarantine)
    matrix = evaluate(model, DataLoader(split, batch_size=32), split.num_classes, device, split.ignore_index)
    iou = matrix.iou()
    return {
        "miou": matrix.miou(),
        "pixel_accuracy": matrix.pixel_accuracy(),
        "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(split.class_names, iou, strict=True)},
        "eval_split": cfg.eval_split,
    }


def run_finetune(config: FinetuneConfig, name: str, storage_path: str, num_workers: int = 1) -> FinetuneResult:
    """Fine-tune on the connected cluster (same ``name`` resumes from its last checkpoint)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .datasets import SegmentationDataset

    if not ray.is_initialized():
        ray.init()
    use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    trainer = TorchTrainer(
        finetune_loop,
        train_loop_config=asdict(config),
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": config.threads_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=os.path.abspath(storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # a chip found unreadable is quarantined; the retry resumes from the last epoch without it
            failure_config=FailureConfig(max_failures=1),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise GeonasError(f"fine-tuning run {name!r} ended without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / _STATE, map_location="cpu", weights_only=False)
        metrics = json.loads((Path(folder) / _METRICS).read_text())
    if not metrics.get("final"):
        raise GeonasError(f"fine-tuning run {name!r} stopped before its last epoch")
    train = SegmentationDataset(config.data_root, "train", bands=config.bands, preload=False)
    return FinetuneResult(
        metrics=metrics,
        state_dict=state["model"],
        in_chans=train.in_chans,
        num_classes=train.num_classes,
        bands=train.bands,
        class_names=train.class_names,
        mean=[float(x) for x in train.mean],
        std=[float(x) for x in train.std],
    )


def stage1_init(init: str, weights_dir: str | None, arch_hash: str | None) -> tuple[str | None, str]:
    """(weights file or None, what stage 2 starts from): the trial's best stage-1 epoch unless ``init``
    (the spec's ``stage2.init``) says scratch, or its weights are not on this machine (storage on an
    object store: no ``weights_dir``)."""
    from .stage1 import best_weights_path

    if init == "scratch":
        return None, "scratch"
    if weights_dir is None or arch_hash is None:
        return None, "scratch (stage-1 weights are not kept with object-store storage)"
    path = best_weights_path(weights_dir, arch_hash)
    if not path.exists():
        return None, f"scratch (no stage-1 weights at {path})"
    return str(path), "stage1"


@dataclass
class Finetuned:
    """One fine-tuned stage-2 model with its fresh latency: what export and registration take."""

    model: torch.nn.Module = field(repr=False)  # in eval mode, with the fine-tuned weights
    result: FinetuneResult
    latency_ms: float  # measured again, now, by the experiment's meter
    check: dict[str, Any]  # search_spaces.feasibility.recheck against stage 1's number, plus the machine
    data: dict[str, Any]  # the data contract that travels with the weights: bands, classes, mean, std, ...


def finetune_candidate(
    config: FinetuneConfig,
    name: str,
    storage_path: str,
    num_workers: int,
    *,
    meter,
    context,
    stage1_latency_ms: float | None,
    recheck_tolerance: float,
) -> Finetuned:
    """Fine-tune ``config.descriptor`` (:func:`run_finetune`), load the result into a model, re-measure
    its latency on the experiment's ``meter`` at the stage-1 ``context``'s input shape and latency
    settings, and recheck it by the rule stage 1 pruned with (``search_spaces.feasibility``)."""
    from search_spaces.feasibility import recheck

    from .meter import remeasure_latency

    result = run_finetune(config, name, storage_path, num_workers)
    model = model_from_descriptor(config.descriptor, result.in_chans, result.num_classes).eval()
    model.load_state_dict(result.state_dict)
    lat = context.latency
    tile = lat.tile_size or context.chip_size
    shape = (lat.batch_size, result.in_chans, tile, tile)
    measured = remeasure_latency(meter, config.descriptor, result.num_classes, shape)
    latency_ms = float(measured["median_ms"])
    check = recheck(stage1_latency_ms, latency_ms, lat.target_ms, lat.margin, recheck_tolerance).to_dict()
    check["machine"] = measured.get("machine")
    data = {
        "bands": result.bands,
        "classes": result.class_names,
        "mean": result.mean,
        "std": result.std,
        "chip_size": context.chip_size,
        "ignore_index": context.ignore_index,
    }
    return Finetuned(model=model, result=result, latency_ms=latency_ms, check=check, data=data)
