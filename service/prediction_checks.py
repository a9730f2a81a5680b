"""What the API checks before a prediction job is stored: the model, where outputs go, every scene's bands.

Each scene's header is read (rasterio, never torch: the API stays light); a scene whose bands do not
match the model's record is a 422 naming the pattern that found it, before any work starts. A scene
that cannot be read at all is left to the job, where it fails alone with its reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search_spaces.errors import DataError, NotFound, SpecError

from .settings import Settings
from .specs import PredictionSpec
from .validation import _refuse_system_folder, check_data_root, user_path

__all__ = ["check_prediction", "model_inputs"]


def model_inputs(model: Any) -> tuple[list[str], list[str] | None]:
    """The model's band names and, when its training dataset is reachable here, that dataset's bands."""
    from trainers.scenes import dataset_bands

    data = model.data or {}
    return list(data.get("bands") or []), dataset_bands((model.training or {}).get("data_root"))


def _check_out(path: str, settings: Settings) -> Path:
    out = user_path(path, "out").resolve()
    if not settings.data_roots:
        _refuse_system_folder(out, path, "out")
    else:
        allowed = [Path(r).expanduser().resolve() for r in settings.data_roots]
        if not any(out == base or base in out.parents for base in allowed):
            raise SpecError(f"{path} is outside the allowed data roots ({', '.join(map(str, allowed))})", field="out")
    if out.exists() and not out.is_dir():
        raise SpecError(f"{out} exists and is not a folder", field="out")
    if not out.parent.is_dir():
        raise SpecError(f"the folder {out.parent} that would hold {out.name} does not exist", field="out")
    return out


def check_prediction(spec: PredictionSpec, settings: Settings, store: Any) -> int:
    """Refuse, naming the field, what the job would refuse; return how many scenes it will read."""
    from trainers.scenes import band_indexes, expand_scenes, read_header

    try:
        model = store.get_model(spec.model_id)
    except NotFound:
        raise SpecError(
            f"model {spec.model_id!r} is not registered; list them with GET /v1/models", "model_id"
        ) from None
    if "weights.safetensors" not in (model.artifacts or {}) or not (model.data or {}).get("bands"):
        raise SpecError(f"model {spec.model_id} has no exported weights or band record to predict with", "model_id")
    model_bands, trained = model_inputs(model)
    _check_out(spec.out, settings)
    count = 0
    for i, pattern in enumerate(spec.scenes):
        field = f"scenes.{i}"
        base = user_path(pattern, field)
        while not base.exists() and base != base.parent:  # a glob's folder: the part before the pattern
            base = base.parent
        check_data_root(str(base if base.is_dir() else base.parent), settings, field)
        try:
            (found,) = expand_scenes([pattern])
        except DataError as exc:
            raise SpecError(str(exc), field) from None
        for scene in found:
            try:
                header = read_header(scene)
            except DataError:
                continue  # unreadable: the job records it as failed, alone
            try:
                band_indexes(header, model_bands, trained)
            except DataError as exc:
                raise SpecError(str(exc), field) from None
        count += len(found)
    return count
