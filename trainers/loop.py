"""Training and evaluation loops shared by stage 1, stage 2 and baselines.

CPU is the default; on CUDA the loops use channels_last and bfloat16 autocast. A loss that turns
non-finite raises :class:`TrainingDiverged` so the trial is recorded as failed with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import ConfusionMatrix

__all__ = ["Device", "TrainingDiverged", "train_epoch", "evaluate", "pick_device", "free_threads_per_worker"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Device:
    torch_device: torch.device

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    def autocast(self):
        if self.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.torch_device)
        if self.is_cuda:
            model = model.to(memory_format=torch.channels_last)
        return model

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.torch_device, non_blocking=True)
        if self.is_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def pick_device() -> Device:
    return Device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    device: Device,
    ignore_index: int = 255,
) -> dict[str, float]:
    """One pass over ``batches``; returns the mean loss and the number of samples seen."""
    model.train()
    total, samples = 0.0, 0
    for images, masks in batches:
        images, masks = device.batch(images), masks.to(device.torch_device)
        with device.autocast():
            logits = model(images)
            loss = F.cross_entropy(logits.float(), masks, ignore_index=ignore_index)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"loss became {loss.item()} after {samples} samples")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * images.shape[0]
        samples += images.shape[0]
    return {"loss": total / max(samples, 1), "samples": samples}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: Device,
    ignore_index: int = 255,
) -> ConfusionMatrix:
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    for images, masks in batches:
        with device.autocast():
            logits = model(device.batch(images))
        matrix.update(logits.argmax(1), masks.to(device.torch_device))
    return matrix


def free_threads_per_worker(workers: int) -> int:
    """CPU threads per Ray Train worker when a spec leaves it open: the cluster's free CPUs shared out.

    Stage 2 runs after the search and pretraining runs alone, so the CPUs trials held are free; a
    worker lives on one node, so it never asks for more than the largest node has.
    """
    import ray

    free = ray.available_resources().get("CPU", 1.0)
    largest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
    return max(1, int(min(free // workers, largest)))
