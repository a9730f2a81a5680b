"""What the store registers of a fine-tuned stage-2 model: the trial's final record and the model's entry.

Stage 2 fine-tunes a selected trial and re-measures it (:func:`trainers.stage2.finetune_candidate`),
then exports it (:func:`trainers.export.export_model`); :func:`registration` gathers from both what the
driver writes: the completed stage-2 trial (mIoU, fresh latency, parameters, the latency recheck in its
history) and the model's entry (metrics with the ONNX difference and the latency recheck, the training
settings with what it started from, the data contract, the artifacts). Only the driver writes to the
store. Nothing here imports torch at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Registration", "registration"]


@dataclass(frozen=True)
class Registration:
    """Keyword arguments of the two store writes that register one fine-tuned model."""

    trial: dict[str, Any]  # for ``Store.record_trial`` of the completed stage-2 trial
    model: dict[str, Any]  # for ``Store.register_model``


def registration(tuned, config, init: str, artifacts: dict[str, str], onnx, latency_device: str) -> Registration:
    """The store's record of ``tuned`` (a :class:`~trainers.stage2.Finetuned`), fine-tuned with ``config``
    from ``init`` (what stage 2 started from) and exported to ``artifacts`` with the ONNX report ``onnx``."""
    metrics = {k: v for k, v in tuned.result.metrics.items() if k not in ("final",)}
    metrics["onnx_max_abs_diff"] = onnx.max_abs_diff
    metrics["latency_check"] = tuned.check
    history = tuned.result.metrics.get("history") or []
    training = {**config.settings(), "init": init, "first_epoch_loss": history[0]["loss"] if history else None}
    trial = dict(
        epoch=config.epochs,
        history_entry={"epoch": config.epochs, "miou": metrics["miou"], "latency_check": tuned.check},
        miou=metrics["miou"],
        latency_ms=tuned.latency_ms,
        latency_device=latency_device,
        params=sum(p.numel() for p in tuned.model.parameters()),
    )
    model = dict(
        descriptor=config.descriptor,
        miou=metrics["miou"],
        latency_ms=tuned.latency_ms,
        latency_device=latency_device,
        metrics=metrics,
        training=training,
        data=tuned.data,
        artifacts=artifacts,
    )
    return Registration(trial=trial, model=model)
