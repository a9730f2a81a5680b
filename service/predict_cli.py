"""What ``geonas predict`` needs beyond the API: a registered model rebuilt locally (``--local``), and
following a prediction job's progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import ApiClient

__all__ = ["load_registered_model", "predict_local", "follow_prediction", "progress_line"]

CACHE = Path.home() / ".cache" / "geonas" / "models"


def load_registered_model(client: ApiClient, meta: dict[str, Any]):
    """Download the model's weights (cached by id) and rebuild it with the same architecture."""
    from search_spaces.builder import model_from_descriptor
    from trainers.export import load_weights

    weights = CACHE / meta["id"] / "weights.safetensors"
    if not weights.exists():
        client.download_artifact(meta["id"], "weights.safetensors", weights)
    data = meta["data"]
    model = model_from_descriptor(meta["descriptor"], len(data["bands"]), len(data["classes"]))
    load_weights(model, weights)
    return model.eval()


def predict_local(
    client: ApiClient,
    meta: dict[str, Any],
    patterns: list[str],
    out: Path,
    *,
    tile: int,
    overlap: int,
    batch_size: int | None,
    probabilities: bool,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Today's in-process path over many scenes: the same plan, outputs and mosaic as the cluster's job."""
    from trainers.predict import predict_scene
    from trainers.scene_output import MODEL_TAG, write_vrt
    from trainers.scenes import dataset_bands, plan_scenes

    data = meta["data"]
    plans = plan_scenes(
        patterns, model_id=meta["id"], model_bands=data["bands"],
        trained_bands=dataset_bands(meta.get("training", {}).get("data_root")), out_dir=out.resolve(),
        tile=tile, overlap=overlap, probabilities=probabilities,
    )  # fmt: skip
    model = load_registered_model(client, meta) if any(p.state == "pending" for p in plans) else None
    for plan in plans:
        if plan.state != "pending":
            continue
        try:
            predict_scene(
                model, plan.path, plan.outputs.mask, band_indexes=plan.bands, mean=data["mean"], std=data["std"],
                num_classes=len(data["classes"]), tile=tile, overlap=overlap, batch_size=batch_size,
                probabilities=plan.outputs.probabilities, tags={MODEL_TAG: meta["id"]},
                progress=(lambda d, t, name=plan.path.name: progress(name, d, t)) if progress else None,
            )  # fmt: skip
            plan.state = "completed"
        except Exception as exc:  # noqa: BLE001 - a scene that cannot be read fails alone, as on the cluster
            plan.state, plan.error = "failed", str(exc)
    write_vrt([p.outputs.mask for p in plans if p.state in ("completed", "skipped")], out.resolve() / "mosaic.vrt")
    return [p.result() for p in plans]


def progress_line(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    rate = p.get("windows_per_s")
    return (
        f"{job['state']}: scenes {p.get('scenes_done', 0)}/{p.get('scenes_total', '?')} done "
        f"({p.get('scenes_skipped', 0)} skipped, {p.get('scenes_failed', 0)} failed), "
        f"windows {p.get('windows_done', 0)}/{p.get('windows_total', '?')}"
        + (f", {rate:.1f} windows/s" if rate else "")
    )


def follow_prediction(client: ApiClient, prediction_id: str, show: Callable[[str], None], every_s: float = 3.0):
    """Print the job's progress when it changes, until it ends; return the final job."""
    last = None
    while True:
        job = client.prediction(prediction_id)
        line = progress_line(job)
        if line != last:
            show(line)
            last = line
        if job["state"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(every_s)
