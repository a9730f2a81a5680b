"""The prediction driver: what a Ray Job runs for one prediction job.

``python -m service.predict_driver ID`` plans the scenes (band check, unreadable scenes, complete
outputs skipped), runs the Ray Data pipeline of :mod:`trainers.batch_predict` over the rest, stores
its progress as it goes (scenes done, windows/s; throttled), writes the VRT mosaic over every
finished mask and records each scene's outcome. A scene that fails does so alone; the job fails only
when no scene has an output.

The model actors write each scene's outputs themselves (``write_on: workers``, the default), so the
spec's ``out`` must be a folder every node of the cluster sees at the same path; ``write_on: driver``
has the actors send each blended scene here to be written instead (see :mod:`trainers.batch_predict`).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from .specs import PredictionSpec
from .states import State
from .store import Store

log = logging.getLogger("geonas.predict")

__all__ = ["main", "run_prediction_job"]

_DONE = ("completed", "skipped")


class _Progress:
    """Stores the job's progress every few seconds, not every batch (the store is shared)."""

    def __init__(self, store: Store, prediction_id: str, plans: list, every_s: float = 2.0) -> None:
        self.store, self.prediction_id, self.plans, self.every_s = store, prediction_id, plans, every_s
        self.last = 0.0
        self.windows_total = sum(p.windows for p in plans if p.state == "pending")
        self.stats: dict[str, Any] = {}

    def __call__(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def summary(self) -> dict[str, Any]:
        states = [p.state for p in self.plans]
        seconds = float(self.stats.get("seconds", 0.0))
        windows = int(self.stats.get("windows", 0))
        return {
            "scenes_total": len(states),
            "scenes_done": sum(s in _DONE for s in states),
            "scenes_skipped": states.count("skipped"),
            "scenes_failed": states.count("failed"),
            "scenes_running": states.count("running"),
            "windows_total": self.windows_total,
            "windows_done": windows,
            "seconds": round(seconds, 3),
            "windows_per_s": round(windows / seconds, 3) if seconds > 0 else None,
            "startup_s": self.stats.get("first_batch_s"),
            "all_actors_started_s": self.stats.get("all_started_s"),
            "steady_windows_per_s": _steady_rate(self.stats),
            "actors": self.stats.get("actors"),
            "gpus_per_actor": self.stats.get("gpus_per_actor"),
            "nodes": self.stats.get("nodes", {}),
            "write_on": self.stats.get("write_on"),
        }

    def flush(self, **fields: Any) -> None:
        self.last = time.monotonic()
        scenes = [p.result() for p in self.plans]
        self.store.update_prediction(self.prediction_id, progress=self.summary(), scenes=scenes, **fields)


def _steady_rate(stats: dict[str, Any]) -> float | None:
    """Windows/s once every model actor had predicted its first batch: the pool's rate without its
    start-up (actors importing torch and building the model, not all at once)."""
    start = "all_started" if "all_started_s" in stats else "first_batch"
    if f"{start}_s" not in stats:
        return None
    seconds = float(stats.get("seconds", 0.0)) - stats[f"{start}_s"]
    windows = int(stats.get("windows", 0)) - int(stats[f"{start}_windows"])
    return round(windows / seconds, 3) if seconds > 0 and windows > 0 else None


def run_prediction_job(prediction_id: str, store: Store, storage: str) -> None:
    import ray

    from trainers.batch_predict import ClusterOptions, ModelRecord, predict_on_cluster
    from trainers.scene_output import MODEL_TAG, write_vrt
    from trainers.scenes import plan_scenes

    from .prediction_checks import model_inputs

    job = store.get_prediction(prediction_id)
    spec = PredictionSpec.model_validate(job.spec)
    model = store.get_model(spec.model_id)
    store.update_prediction(prediction_id, state=State.RUNNING)
    model_bands, trained = model_inputs(model)
    out = Path(spec.out).expanduser().resolve()
    plans = plan_scenes(
        spec.scenes, model_id=model.id, model_bands=model_bands, trained_bands=trained, out_dir=out,
        tile=spec.tile, overlap=spec.overlap, probabilities=spec.probabilities,
    )  # fmt: skip
    progress = _Progress(store, prediction_id, plans)
    progress.flush()
    record = ModelRecord(
        model_id=model.id,
        descriptor=model.descriptor,
        bands=model_bands,
        classes=list(model.data["classes"]),
        mean=[float(v) for v in model.data["mean"]],
        std=[float(v) for v in model.data["std"]],
        weights=Path(model.artifacts["weights.safetensors"]).read_bytes(),
    )
    options = ClusterOptions(
        batch_size=spec.batch_size, workers=spec.workers, cpus_per_worker=spec.cpus_per_worker,
        device=spec.device, resources=dict(spec.resources), write_on=spec.write_on,
    )  # fmt: skip
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    progress.stats = predict_on_cluster(plans, record, options, tags={MODEL_TAG: model.id}, progress=progress)
    masks = [p.outputs.mask for p in plans if p.state in _DONE]
    mosaic, left_out = write_vrt(masks, out / "mosaic.vrt")
    for plan in plans:
        if plan.outputs.mask in left_out:
            plan.note = "left out of mosaic.vrt: another CRS or pixel size than the first scene's"
    failed = [p for p in plans if p.state == "failed"]
    if masks:
        progress.flush(state=State.COMPLETED, mosaic=str(mosaic) if mosaic else None)
        log.info("prediction %s: %d scenes written or kept, %d failed", prediction_id, len(masks), len(failed))
    else:
        reasons = "; ".join(f"{p.path.name}: {p.error}" for p in failed[:3])
        progress.flush(state=State.FAILED, error=f"every scene failed ({len(failed)}): {reasons}"[:4000])


def main(argv: list[str] | None = None) -> int:
    from .entrypoint import job_main

    return job_main(
        argv,
        "Run one geonas prediction job (a Ray Job entrypoint).",
        run_prediction_job,
        lambda store, ident, error: store.update_prediction(ident, state=State.FAILED, error=error),
    )


if __name__ == "__main__":
    sys.exit(main())
