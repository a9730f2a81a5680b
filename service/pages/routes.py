"""The page router: HTML shells, their static files, and the JSON/SVG/PNG endpoints they fetch.

HTML shells carry no data, so they can be served to anyone; everything shown comes from fetches
under ``/ui/`` (and the public ``/v1/`` API) that the page script sends with the user's bearer
token when one was entered. When the API gains auth, these endpoints take the same dependency as
``/v1`` and the pages need no change.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from search_spaces.errors import NotFound

from ..routes.deps import get_store_dep
from ..specs import MAX_OFFSET
from ..states import TERMINAL
from ..store import Store
from .cellgraph import cell_graph_svg
from .charts import bars_svg, curves_svg, loss_svg, rewards_svg, scatter_svg
from .queries import CHART_CACHE, TABLE_COLUMNS, experiment_version, table_page, trial_histories, trial_rows

__all__ = ["shell_router", "data_router"]

#: HTML shells and their static files: no data in them, so public (a browser cannot attach a header
#: to a navigation; the token travels with the fetches instead).
shell_router = APIRouter(include_in_schema=False)
#: Everything the pages show: include it with the same auth dependencies as ``/v1``.
data_router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).with_name("static")
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
_SVG = "image/svg+xml"
_FINISHED = frozenset(str(s) for s in TERMINAL)
DASHBOARD_TOKEN_NOTE = "The Ray dashboard asks for a token once: run `ray get-auth-token` on the head node."


@lru_cache(maxsize=16)
def _read_static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _shell(name: str) -> HTMLResponse:
    return HTMLResponse(_read_static(name), headers={"Cache-Control": "no-cache"})


@shell_router.get("/", response_class=HTMLResponse)
def index_page() -> HTMLResponse:
    return _shell("index.html")


@shell_router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(experiment_id: str) -> HTMLResponse:
    return _shell("experiment.html")


@shell_router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(model_id: str) -> HTMLResponse:
    return _shell("model.html")


@shell_router.get("/pretraining/{job_id}", response_class=HTMLResponse)
def pretraining_page(job_id: str) -> HTMLResponse:
    return _shell("pretraining.html")


@shell_router.get("/predictions/{prediction_id}", response_class=HTMLResponse)
def prediction_page(prediction_id: str) -> HTMLResponse:
    return _shell("prediction.html")


@shell_router.get("/ui/static/{name}")
def static_file(name: str) -> Response:
    suffix = Path(name).suffix
    # Only plain names of files shipped in static/: a request can never reach another path.
    if "/" in name or suffix not in _STATIC_TYPES or not (STATIC / name).is_file():
        raise NotFound(f"no static file {name!r}")
    return Response(_read_static(name), media_type=_STATIC_TYPES[suffix])


# -- overview -------------------------------------------------------------------------------------
def _pretraining_jobs(store: Store) -> list[Any] | None:
    """The store's pretraining jobs, or None where this version of the store has none."""
    lister = getattr(store, "list_pretraining", None)
    if lister is None:
        return None
    try:
        return list(lister())
    except Exception:  # noqa: BLE001 - a missing table must not take the overview down
        return None


def _pretraining_public(job: Any) -> dict[str, Any]:
    spec = getattr(job, "spec", None) or {}
    return {
        "id": job.id,
        "name": getattr(job, "name", job.id),
        "state": getattr(job, "state", "unknown"),
        "step": int(getattr(job, "step", 0) or 0),
        "steps": int(spec.get("steps", 0) or 0),
        "owner": getattr(job, "owner", None),
        "dashboard_url": getattr(job, "dashboard_url", None),
        "error": getattr(job, "error", None),
        "created_at": str(getattr(job, "created_at", "") or ""),
    }


@data_router.get("/ui/overview")
def overview(
    request: Request, limit: int = Query(200, ge=1, le=1000), store: Store = Depends(get_store_dep)
) -> dict[str, Any]:
    experiments = store.list_experiments(limit, 0)
    counts = store.trial_counts([e.id for e in experiments])
    jobs = _pretraining_jobs(store)
    return {
        "experiments": [
            {
                "id": e.id,
                "name": e.name,
                "state": e.state,
                "trials_done": counts.get(e.id, 0),
                "trials_total": int((e.spec or {}).get("budget", {}).get("trials", 0)),
                "owner": getattr(e, "owner", None),
                "dashboard_url": e.dashboard_url or request.app.state.settings.dashboard_url,
                "error": e.error,
                "created_at": e.created_at.isoformat(),
            }
            for e in experiments
        ],
        "pretraining": None if jobs is None else [_pretraining_public(j) for j in jobs],
        "dashboard_note": DASHBOARD_TOKEN_NOTE,
    }


# -- experiment -----------------------------------------------------------------------------------
def _target_ms(spec: dict[str, Any]) -> float | None:
    value = (spec or {}).get("latency", {}).get("target_ms")
    return float(value) if isinstance(value, int | float) else None


@data_router.get("/ui/experiments/{experiment_id}/summary")
def experiment_summary(experiment_id: str, store: Store = Depends(get_store_dep)) -> dict[str, Any]:
    exp = store.get_experiment(experiment_id)
    version = experiment_version(store, experiment_id)
    rows = trial_rows(store, experiment_id, version)
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    measured = [r for r in rows if r.miou is not None]
    best = max(measured, key=lambda r: r.miou, default=None)
    spec = exp.spec or {}
    return {
        "id": exp.id,
        "name": exp.name,
        "state": exp.state,
        "error": exp.error,
        "version": version,
        # Same rule as Store.trial_counts (finished stage-1 searched trials), from the cached rows.
        "trials_done": sum(1 for r in rows if r.stage == 1 and r.kind == "searched" and r.state in _FINISHED),
        "trials_total": int(spec.get("budget", {}).get("trials", 0)),
        "trials_recorded": len(rows),
        "states": states,
        "target_ms": _target_ms(spec),
        "latency_device": spec.get("latency", {}).get("device"),
        "searcher": (spec.get("searcher") or {}).get("name") if isinstance(spec.get("searcher"), dict) else None,
        "backbone": spec.get("backbone"),
        "dashboard_url": exp.dashboard_url,
        "dashboard_note": DASHBOARD_TOKEN_NOTE,
        "best": best.public() if best else None,
        "models": [
            {
                "id": m.id,
                "trial_id": m.trial_id,
                "kind": m.kind,
                "miou": m.miou,
                "latency_ms": m.latency_ms,
                "arch_hash": m.arch_hash,
                "flags": (m.metrics or {}).get("latency_check", {}).get("flags", []),
            }
            for m in store.list_models(experiment_id)
        ],
        "table_columns": list(TABLE_COLUMNS),
    }


def _svg(content: str) -> Response:
    return Response(content, media_type=_SVG, headers={"Cache-Control": "no-cache"})


def _chart(kind: str, store: Store, experiment_id: str) -> Response:
    """The scatter or reward chart, rebuilt only when the experiment's version changes."""
    exp = store.get_experiment(experiment_id)
    version = experiment_version(store, experiment_id)
    key = (store.url, experiment_id, version, kind)
    body = CHART_CACHE.get(key)
    if body is None:
        rows = trial_rows(store, experiment_id, version)
        body = scatter_svg(rows, _target_ms(exp.spec)) if kind == "scatter" else rewards_svg(rows)
        CHART_CACHE.put(key, body)
    return _svg(body)


@data_router.get("/ui/experiments/{experiment_id}/scatter.svg")
def scatter(experiment_id: str, store: Store = Depends(get_store_dep)) -> Response:
    return _chart("scatter", store, experiment_id)


@data_router.get("/ui/experiments/{experiment_id}/rewards.svg")
def rewards(experiment_id: str, store: Store = Depends(get_store_dep)) -> Response:
    return _chart("rewards", store, experiment_id)


@data_router.get("/ui/experiments/{experiment_id}/trials")
def trials_table(
    experiment_id: str,
    sort: str = Query("created_at"),
    order: str = Query("asc", pattern="^(asc|desc)$"),
    state: str | None = Query(None, max_length=16),
    q: str | None = Query(None, max_length=100),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    limit: int = Query(50, ge=1, le=500),
    store: Store = Depends(get_store_dep),
) -> JSONResponse:
    store.get_experiment(experiment_id)
    if sort not in TABLE_COLUMNS:
        return JSONResponse(
            status_code=422,
            content={
                "detail": [
                    {
                        "loc": ["query", "sort"],
                        "msg": f"sort by one of {', '.join(TABLE_COLUMNS)}",
                        "type": "value_error",
                    }
                ]
            },
        )
    rows = trial_rows(store, experiment_id, experiment_version(store, experiment_id))
    total, page = table_page(
        rows, sort=sort, descending=order == "desc", state=state, text=q, offset=offset, limit=limit
    )
    return JSONResponse({"total": total, "all": len(rows), "offset": offset, "rows": [r.public() for r in page]})


@data_router.get("/ui/experiments/{experiment_id}/curves.svg")
def learning_curves(
    experiment_id: str,
    ids: str = Query("", max_length=20000, description="Comma-separated trial ids."),
    highlight: str | None = Query(None),
    store: Store = Depends(get_store_dep),
) -> Response:
    store.get_experiment(experiment_id)
    wanted = [i for i in ids.split(",") if i][:100]
    if highlight and highlight not in wanted:
        wanted.insert(0, highlight)
    return _svg(curves_svg(trial_histories(store, experiment_id, wanted), highlight))


# -- model ----------------------------------------------------------------------------------------
@data_router.get("/ui/models/{model_id}/cells.svg")
def model_cells(model_id: str, store: Store = Depends(get_store_dep)) -> Response:
    return _svg(cell_graph_svg(store.get_model(model_id).descriptor or {}))


@data_router.get("/ui/models/{model_id}/iou.svg")
def model_iou(model_id: str, store: Store = Depends(get_store_dep)) -> Response:
    model = store.get_model(model_id)
    iou = (model.metrics or {}).get("iou") or {}
    if isinstance(iou, list):
        names = (model.data or {}).get("classes") or [f"class {i}" for i in range(len(iou))]
        iou = dict(zip(names, iou, strict=False))
    return _svg(bars_svg(iou if isinstance(iou, dict) else {}))


@data_router.get("/ui/models/{model_id}/preview.json")
def model_preview_meta(
    model_id: str, chip: int = Query(0, ge=0), store: Store = Depends(get_store_dep)
) -> dict[str, Any]:
    from .preview import render_preview

    return render_preview(store.get_model(model_id), chip)["meta"]


@data_router.get("/ui/models/{model_id}/preview/{kind}.png")
def model_preview_png(
    model_id: str, kind: str, chip: int = Query(0, ge=0), store: Store = Depends(get_store_dep)
) -> Response:
    from .preview import PREVIEW_KINDS, render_preview

    if kind not in PREVIEW_KINDS:
        raise NotFound(f"no preview {kind!r}; choose one of {', '.join(PREVIEW_KINDS)}")
    return Response(render_preview(store.get_model(model_id), chip)[kind], media_type="image/png")


# -- pretraining ----------------------------------------------------------------------------------
def _pretraining_job(store: Store, job_id: str) -> Any:
    getter = getattr(store, "get_pretraining", None)
    if getter is None:
        raise NotFound("this API has no pretraining jobs yet")
    return getter(job_id)


@data_router.get("/ui/pretraining/{job_id}")
def pretraining_detail(job_id: str, store: Store = Depends(get_store_dep)) -> dict[str, Any]:
    job = _pretraining_job(store, job_id)
    knn = getattr(job, "knn", None)
    return {
        **_pretraining_public(job),
        "spec": getattr(job, "spec", None) or {},
        "knn": knn if isinstance(knn, dict) else None,
        "artifact": getattr(job, "artifact", None),
        "points": len(getattr(job, "loss_curve", None) or []),
    }


@data_router.get("/ui/pretraining/{job_id}/loss.svg")
def pretraining_loss(job_id: str, store: Store = Depends(get_store_dep)) -> Response:
    job = _pretraining_job(store, job_id)
    return _svg(loss_svg(getattr(job, "loss_curve", None) or []))
