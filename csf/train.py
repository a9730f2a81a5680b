"""CSF pretraining: the per-worker loop that Ray Train runs, and the entry a Ray Job driver calls.

:func:`pretrain` is a plain function of a config dict, run on every worker of a ``TorchTrainer``
(data parallel): each worker draws its batches from its own shard of the chips, makes two views of
each, and the loss gathers every worker's features so that all samples of the global batch are
negatives. Adam with a linear warm-up (then a constant rate or a cosine decay: :mod:`csf.schedule`),
gradient clipping, AMP (bfloat16, or float16 with a scaler) and channels-last on CUDA. With ``ema``
the exported encoder is an exponential moving average of the weights over the steps (BatchNorm
statistics included), not the last step's. Every step's
metrics go to the caller through a queue (the loss curve); Ray Train hears of them every
``report_every`` steps, with a checkpoint every ``checkpoint_every`` steps (and at the end). A
``ray.train.report`` waits on Ray Train's controller: reporting every step, a small CPU run took 2.0
s a step against 0.07 s (median gap between steps; resnet10t, 2 CPUs).
It resumes from the latest checkpoint Ray hands it: rerunning the same ``name`` under the same
``storage_path`` continues where a killed run stopped. The last checkpoint
holds the encoder as safetensors (:mod:`csf.encoder`), which :func:`run_pretraining` copies to
``{storage_path}/{name}/encoder.safetensors``.

The batch randomness of step ``t`` on worker ``r`` comes from ``(seed, r, t)`` alone, so a resumed
run draws the same batches and views as an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from search_spaces.errors import DataError, GeonasError, SpecError

from .data import load_chips
from .encoder import CSFEncoder, EncoderMetadata, export_encoder
from .loss import contrastive_loss
from .schedule import LR_SCHEDULES, lr_factor
from .views import ViewConfig, dropout_probability, make_views

__all__ = ["PretrainConfig", "CSFStep", "pretrain", "run_pretraining", "sensor_groups", "ARTIFACT_NAME"]

ARTIFACT_NAME = "encoder.safetensors"
_STATE_NAME = "state.pt"
_HISTORY_NAME = "history.json"


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; the paper's values where it gives them."""

    data: dict[str, Any]
    backbone: str = "resnet50"
    stages: list[int] = field(default_factory=lambda: [-2, -1])
    steps: int = 10000
    batch_size: int = 32  # per worker
    lr: float = 1e-3
    warmup_steps: int = 3000
    lr_schedule: str = "constant"  # after the warm-up: "constant", or "cosine" decay to 0 at ``steps`` (csf.schedule)
    grad_clip: float = 1.0
    temperature: float = 0.1
    projection: int = 0  # channels of a per-stage projection head (csf.encoder); 0 = none, as the paper
    normalize: bool = True  # cosine similarities; False: the paper's raw dot product (csf.loss)
    crop: int = 128
    p_max: float = 0.66
    ramp_steps: int = 8000
    noise_std: float = 0.0  # per-view noise and band gain (csf.views): off in the paper
    gain_jitter: float = 0.0
    sensor_dropout: float = 0.0  # whole-sensor dropout per view (csf.views); off in the paper
    cross_sensor: float = 0.0  # share of samples whose views see complementary sensors (csf.views)
    dihedral: bool = False  # random turns and mirrors of each chip before its views (csf.views)
    dropout_counts: str = "stack"  # band dropout's never-all rule: every band of the stack, or the view's (csf.views)
    place_negatives: bool = True  # False: chips of a sample's own place (plot) are not its negatives (csf.loss)
    ema: float = 0.0  # decay of a moving average of the weights, exported instead of the last step's; 0 = off
    checkpoint_every: int = 500
    report_every: int = 50  # steps between ray.train.report calls (each costs about 2 s: see pretrain)
    seed: int = 0
    threads_per_worker: int = 1  # CPU threads for torch on each worker

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PretrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in raw if k not in names and not k.startswith("_"))
        if unknown:
            raise SpecError(f"unknown pretraining settings {unknown}; valid: {sorted(names)}",
                            field=unknown[0])
        if "data" not in raw:
            raise SpecError("pretraining needs 'data', e.g. {'kind': 'multisensor', 'root': ...}",
                            field="data")
        config = cls(**{k: v for k, v in raw.items() if k in names})
        config.validate()
        return config

    def validate(self) -> None:
        positive = ("steps", "batch_size", "checkpoint_every", "report_every", "threads_per_worker")
        for name in positive:
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be >= 1, got {getattr(self, name)}", field=name)
        if self.batch_size < 2:
            raise SpecError("batch_size must be >= 2: a contrastive batch needs negatives",
                            field="batch_size")
        if self.lr <= 0 or self.temperature <= 0 or self.grad_clip <= 0:
            raise SpecError("lr, temperature and grad_clip must be positive", field="lr")
        if self.warmup_steps < 0:
            raise SpecError(f"warmup_steps must be >= 0, got {self.warmup_steps}", field="warmup_steps")
        if not 0.0 <= self.ema < 1.0:
            raise SpecError(f"ema must be in [0, 1) (0 = off), got {self.ema}", field="ema")
        if self.lr_schedule not in LR_SCHEDULES:
            raise SpecError(f"lr_schedule must be one of {sorted(LR_SCHEDULES)}, got {self.lr_schedule!r}",
                            field="lr_schedule")
        self.views()

    def views(self) -> ViewConfig:
        return ViewConfig(crop=self.crop, p_max=self.p_max, ramp_steps=self.ramp_steps,
                          noise_std=self.noise_std, gain_jitter=self.gain_jitter,
                          sensor_dropout=self.sensor_dropout, cross_sensor=self.cross_sensor,
                          dihedral=self.dihedral, dropout_counts=self.dropout_counts)


def sensor_groups(band_names: Sequence[str], sensors: dict[str, list[str]]) -> list[list[int]]:
    """Each sensor's band indices in the stacked input (for whole-sensor dropout)."""
    return [[band_names.index(b) for b in bands if b in band_names] for bands in sensors.values()]


def _train_context() -> tuple[int, int, Any]:
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size(), ctx


def _autocast(device: torch.device) -> tuple[Any, torch.amp.GradScaler | None]:
    """AMP settings for the device: bfloat16 where supported, else float16 with a loss scaler."""
    if device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


class CSFStep:
    """One optimisation step of CSF on a batch of chips: views, forward, loss, clipped Adam step.

    Holds the optimizer, AMP state and, with ``cfg.ema``, the moving average of the weights (torch's
    ``AveragedModel``; :attr:`encoder` is what to export); knows nothing of Ray, so a GPU check or a
    notebook can run it on a plain module. ``model`` may be DDP-wrapped (the loss then gathers across
    workers).
    """

    def __init__(self, model: torch.nn.Module, cfg: PretrainConfig, device: torch.device,
                 groups: Sequence[Sequence[int]] = ()) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.groups = [list(g) for g in groups]  # band indices of each sensor, for sensor dropout
        self.views = cfg.views()
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.amp_dtype, self.scaler = _autocast(device)
        self.plain = getattr(model, "module", model)  # under DDP, the encoder itself
        self.average = (AveragedModel(self.plain, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
                        if cfg.ema else None)  # fmt: skip

    @property
    def encoder(self) -> torch.nn.Module:
        """The weights to export: their moving average with ``ema``, else the model's own."""
        return self.average.module if self.average is not None else self.plain

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "average": self.average.state_dict() if self.average is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.average is not None:
            if not state.get("average"):
                raise GeonasError("the checkpoint has no moving average of the weights to resume (ema): "
                                  "resume with the settings it was started with")
            self.average.load_state_dict(state["average"])

    def __call__(self, batch: torch.Tensor, step: int, rng: torch.Generator,
                 places: torch.Tensor | None = None) -> dict[str, float]:
        """Train on ``batch`` (N, C, H, W), normalised, on the CPU; returns the step's metrics.
        ``places`` (N,): each chip's place, whose other chips are then not its negatives."""
        cfg, device = self.cfg, self.device
        self.model.train()
        v1, v2 = make_views(batch, step, self.views, rng, self.groups)
        x = torch.cat([v1, v2]).to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        lr = cfg.lr * lr_factor(cfg.lr_schedule, step, cfg.warmup_steps, cfg.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        amp = self.amp_dtype is not None
        with torch.autocast(device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=amp):
            features = self.model(x)
        n = len(batch)
        loss, to_backward = contrastive_loss([f[:n] for f in features], [f[n:] for f in features],
                                             cfg.temperature, cfg.normalize, places)
        if not torch.isfinite(loss):
            raise GeonasError(f"CSF loss is {loss.item()} at step {step}; lower lr or temperature")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(to_backward).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            to_backward.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.plain)
        return {"loss": float(loss.detach()), "lr": lr, "p_drop": dropout_probability(step, self.views),
                "grad_norm": float(grad_norm)}


def pretrain(config: dict[str, Any]) -> None:
    """The per-worker CSF loop (Ray Train ``train_loop_per_worker``); see the module note."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    cfg = PretrainConfig.from_dict(config)
    progress_queue = config.get("_progress_queue")
    rank, world, _ = _train_context()
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()

    chips = load_chips(cfg.data)
    mean, std = chips.band_stats()
    images = chips.normalised(mean, std)
    shard = np.arange(rank, len(images), world)
    if len(shard) < cfg.batch_size:
        raise DataError(f"worker {rank} has {len(shard)} chips for a batch of {cfg.batch_size}; use a "
                        "smaller batch_size or fewer workers")
    if cfg.crop > min(images.shape[-2:]):
        raise SpecError(f"crop {cfg.crop} px is larger than the chips ({images.shape[-1]} px)", field="crop")

    encoder = CSFEncoder(cfg.backbone, len(chips.band_names), cfg.stages, cfg.projection)
    n_stages = len(encoder.channels)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(
        encoder, parallel_strategy_kwargs={"find_unused_parameters": max(encoder.stages) != n_stages - 1}
    )
    stepper = CSFStep(model, cfg, device, sensor_groups(chips.band_names, chips.sensors))

    start, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _STATE_NAME, map_location=device, weights_only=False)
            history = json.loads((Path(folder) / _HISTORY_NAME).read_text())
        encoder.load_state_dict(state["model"])
        stepper.load_state_dict(state)
        start = int(state["step"])

    metadata = EncoderMetadata(
        backbone=cfg.backbone, in_chans=len(chips.band_names), band_names=chips.band_names,
        mean=mean, std=std, sensors=chips.sensors, stages=list(encoder.stages),
    )

    def save(step: int, final: bool) -> Checkpoint | None:
        if rank != 0:
            return None
        folder = tempfile.mkdtemp(prefix="csf-ckpt-")
        torch.save({"model": encoder.state_dict(), "step": step, **stepper.state_dict()},
                   Path(folder) / _STATE_NAME)
        (Path(folder) / _HISTORY_NAME).write_text(json.dumps(history))
        if final:
            metadata.steps = step
            export_encoder(stepper.encoder, Path(folder) / ARTIFACT_NAME, metadata)
        return Checkpoint.from_directory(folder)

    step_times: list[float] = []
    model.train()
    for step in range(start, cfg.steps):
        tick = time.perf_counter()
        rng = torch.Generator().manual_seed(_step_seed(cfg.seed, rank, step))
        pick = shard[torch.randperm(len(shard), generator=rng)[: cfg.batch_size].numpy()]
        places = None if cfg.place_negatives or chips.groups is None else torch.from_numpy(chips.groups[pick])
        metrics = stepper(torch.from_numpy(images[pick]), step, rng, places)
        step_times.append(time.perf_counter() - tick)
        done = step + 1
        warm = step_times[3:] or step_times
        metrics.update(step=done, images_per_s_per_worker=cfg.batch_size / float(np.mean(warm)),
                       world_size=world)
        loss_value = metrics["loss"]
        history.append({"step": done, "loss": loss_value})
        if rank == 0 and progress_queue is not None:
            progress_queue.put(metrics)
        final = done == cfg.steps
        if final or done % cfg.checkpoint_every == 0:
            ray.train.report(metrics, checkpoint=save(done, final), checkpoint_dir_name=f"step-{done:07d}")
        elif done % cfg.report_every == 0:
            ray.train.report(metrics)
    if start >= cfg.steps:  # resumed a finished run: hand back the final checkpoint again
        ray.train.report({"step": start, "loss": history[-1]["loss"] if history else math.nan},
                         checkpoint=save(start, True), checkpoint_dir_name=f"step-{start:07d}-final")


def _drain(queue: Any, progress: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
    from ray.util.queue import Empty

    while True:
        try:
            item = queue.get(timeout=0.5)
        except Empty:
            if stop.is_set():
                return
            continue
        progress(item)


def _root_error(exc: BaseException) -> BaseException:
    seen = exc
    while seen is not None:
        if isinstance(seen, GeonasError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def run_pretraining(
    spec: dict[str, Any],
    storage_path: str,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one CSF pretraining job on the connected Ray cluster; returns its summary.

    ``spec``: the :class:`PretrainConfig` fields plus ``name`` (the run's name, e.g. the job id;
    the same name resumes), ``num_workers`` (default 1) and ``use_gpu`` (default: when the cluster
    has GPUs). ``storage_path`` is a local or shared folder. ``progress`` is called with each step's
    metrics (``step``, ``loss``, ``lr``, ``p_drop``, ``images_per_s_per_worker``) from a helper
    thread of this process, one call at a time, so a driver can store the loss curve as it grows.

    Returns ``{"name", "artifact", "steps", "final_loss", "loss_curve", "images_per_s_per_worker",
    "num_workers", "metadata"}``.
    """
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from .encoder import load_csf_backbone

    spec = dict(spec)
    name = str(spec.pop("name", "csf"))
    num_workers = int(spec.pop("num_workers", 1))
    use_gpu = spec.pop("use_gpu", None)
    if num_workers < 1:
        raise SpecError(f"num_workers must be >= 1, got {num_workers}", field="num_workers")
    cfg = PretrainConfig.from_dict(spec)
    if "://" in storage_path:
        raise SpecError("run_pretraining writes its artifact to a local or shared folder; got a URI "
                        f"{storage_path!r}", field="storage_path")
    if not ray.is_initialized():
        ray.init()
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    config = asdict(cfg)
    queue = None
    stop = threading.Event()
    drainer = None
    if progress is not None:
        queue = Queue(actor_options={"num_cpus": 0})
        config["_progress_queue"] = queue
        drainer = threading.Thread(target=_drain, args=(queue, progress, stop), daemon=True)
        drainer.start()
    trainer = TorchTrainer(
        pretrain,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=bool(use_gpu),
            resources_per_worker={"CPU": cfg.threads_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(name=name, storage_path=os.path.abspath(storage_path),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        root = _root_error(exc)
        if root is not exc:
            raise root from exc
        raise
    finally:
        stop.set()
        if drainer is not None:
            drainer.join(timeout=30)
        if queue is not None:
            queue.shutdown()
    if result.checkpoint is None:
        raise GeonasError(f"pretraining run {name!r} ended without a checkpoint")
    target = Path(storage_path).resolve() / name / ARTIFACT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as folder:
        history = json.loads((Path(folder) / _HISTORY_NAME).read_text())
        tmp = target.with_name(f".{ARTIFACT_NAME}.tmp")
        shutil.copyfile(Path(folder) / ARTIFACT_NAME, tmp)
        os.replace(tmp, target)
    _, _, metadata = load_csf_backbone(target)
    return {
        "name": name,
        "artifact": str(target),
        "steps": len(history),
        "final_loss": history[-1]["loss"] if history else None,
        "loss_curve": history,
        "images_per_s_per_worker": result.metrics.get("images_per_s_per_worker"),
        "num_workers": num_workers,
        "metadata": metadata,
    }
