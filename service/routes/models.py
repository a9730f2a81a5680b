"""``/v1/models``: fine-tuned models and their artifacts (weights, ONNX, spec)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from search_spaces.errors import NotFound

from ..public import ModelPublic
from ..responses import NOT_FOUND
from ..store import Model, Store
from .deps import get_store_dep

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_public(model: Model) -> ModelPublic:
    data = {c: getattr(model, c) for c in ModelPublic.model_fields if c != "artifacts"}
    return ModelPublic(**data, artifacts=sorted(model.artifacts))


@router.get("", response_model=list[ModelPublic])
def list_models(
    experiment_id: str | None = Query(None),
    limit: int = Query(100, ge=1, le=1000),
    store: Store = Depends(get_store_dep),
) -> list[ModelPublic]:
    return [model_public(m) for m in store.list_models(experiment_id, limit)]


@router.get("/{model_id}", response_model=ModelPublic, responses=NOT_FOUND)
def get_model(model_id: str, store: Store = Depends(get_store_dep)) -> ModelPublic:
    return model_public(store.get_model(model_id))


@router.get(
    "/{model_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={**NOT_FOUND, 200: {"content": {"application/octet-stream": {}}, "description": "The file."}},
)
def get_artifact(model_id: str, name: str, store: Store = Depends(get_store_dep)) -> FileResponse:
    model = store.get_model(model_id)
    # Only names the registry recorded: a request can never reach another path on disk.
    if name not in model.artifacts:
        raise NotFound(f"model {model_id} has no artifact {name!r}; it has: {', '.join(sorted(model.artifacts))}")
    path = Path(model.artifacts[name])
    if not path.is_file():
        raise NotFound(f"artifact {name!r} of model {model_id} is missing from storage ({path})")
    return FileResponse(path, filename=name)
