"""The CSF pretraining driver: what a Ray Job runs for one pretraining job.

``python -m service.pretrain_driver JOB_ID`` runs :func:`csf.train.run_pretraining` on the cluster,
stores the loss curve as it grows (throttled), evaluates k-NN (random init against the CSF encoder,
per sensor and all bands) and registers the encoder, which experiments can then name as
``backbone: {csf: JOB_ID}``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from .specs import PretrainingData, PretrainingSpec
from .states import State
from .store import Store

log = logging.getLogger("geonas.pretrain")

__all__ = ["main", "run_pretraining_job", "csf_config", "chip_source", "knn_report"]


def chip_source(ref: PretrainingData) -> dict[str, Any]:
    """A spec's data reference as a :func:`csf.data.load_chips` source."""
    data: dict[str, Any] = {"kind": ref.kind, "root": ref.path}
    if ref.kind == "geotiff" and ref.bands:
        data["bands"] = ref.bands
    if ref.kind == "multisensor" and ref.sensors:
        data["sensors"] = ref.sensors
    if ref.max_chips:
        data["max_chips"] = ref.max_chips
    return data


def csf_config(spec: PretrainingSpec, name: str) -> dict[str, Any]:
    """Translate the public spec into :class:`csf.train.PretrainConfig` fields."""
    return {
        "name": name,
        "num_workers": spec.workers,
        "data": chip_source(spec.data),
        "backbone": spec.backbone,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "warmup_steps": spec.warmup_steps,
        "lr_schedule": spec.lr_schedule,
        "crop": spec.crop,
        "temperature": spec.temperature,
        "normalize": spec.similarity == "cosine",
        "projection": spec.projection,
        "ramp_steps": spec.ramp_steps,
        "p_max": spec.p_max,
        "noise_std": spec.noise_std,
        "gain_jitter": spec.gain_jitter,
        "sensor_dropout": spec.sensor_dropout,
        "cross_sensor": spec.cross_sensor,
        "dihedral": spec.dihedral,
        "dropout_counts": spec.dropout_counts,
        "place_negatives": spec.place_negatives,
        "ema": spec.ema,
        "checkpoint_every": spec.checkpoint_every,
        "seed": spec.seed,
    }


class _Progress:
    """Stores the loss curve every few seconds, not every step (the store is shared)."""

    def __init__(self, store: Store, job_id: str, every_s: float = 2.0) -> None:
        self.store, self.job_id, self.every_s = store, job_id, every_s
        self.curve: list[dict[str, Any]] = []
        self.last = 0.0

    def __call__(self, metrics: dict[str, Any]) -> None:
        self.curve.append({"step": int(metrics["step"]), "loss": float(metrics["loss"])})
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        step = self.curve[-1]["step"] if self.curve else 0
        self.store.update_pretraining(self.job_id, step=step, loss_curve=list(self.curve))


def knn_report(spec: PretrainingSpec, artifact: str) -> dict[str, Any]:
    """k-NN of random init (``knn_seeds`` seeds) and of the CSF encoder, on ``knn_data`` (else the
    pretraining chips), with the chips it used and the k-NN distance; ``{}`` when those chips carry no labels."""
    from csf.data import load_chips
    from csf.knn import evaluate_artifact

    ref = spec.knn_chips() or spec.data
    chips = load_chips(chip_source(ref))
    if chips.labels is None:
        return {}
    results = evaluate_artifact(artifact, chips, seeds=spec.knn_seeds, metric=spec.knn_metric)
    spread = results.pop("random_spread", None)
    return {
        # JSON keys are strings: {encoder: {subset: {k: {same_class, accuracy}}}}
        **{e: {s: {str(k): v for k, v in by_k.items()} for s, by_k in subs.items()} for e, subs in results.items()},
        **({"random_spread": spread} if spread is not None else {}),
        "chips": {"path": ref.path, "count": int(len(chips.labels)), "held_out": spec.knn_data is not None,
                  "metric": spec.knn_metric},
    }


def run_pretraining_job(job_id: str, store: Store, storage: str) -> None:
    import ray

    from csf.train import run_pretraining
    from trainers.loop import free_threads_per_worker

    job = store.get_pretraining(job_id)
    spec = PretrainingSpec.model_validate(job.spec)
    store.update_pretraining(job_id, state=State.RUNNING)
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    config = csf_config(spec, f"pretraining-{job_id}")
    config["threads_per_worker"] = spec.cpus_per_worker or free_threads_per_worker(spec.workers)
    progress = _Progress(store, job_id)
    summary = run_pretraining(config, storage, progress=progress)
    progress.curve = summary.get("loss_curve") or progress.curve
    progress.flush()
    knn = knn_report(spec, summary["artifact"]) if spec.knn else None
    store.update_pretraining(
        job_id,
        state=State.COMPLETED,
        artifact=summary["artifact"],
        encoder=summary["metadata"],
        knn=knn,
        step=summary["steps"],
    )


def main(argv: list[str] | None = None) -> int:
    from .entrypoint import job_main

    return job_main(
        argv,
        "Run one geonas CSF pretraining job (a Ray Job entrypoint).",
        run_pretraining_job,
        lambda store, ident, error: store.update_pretraining(ident, state=State.FAILED, error=error),
    )


if __name__ == "__main__":
    sys.exit(main())
