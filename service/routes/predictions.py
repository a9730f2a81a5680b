"""``/v1/predictions``: a registered model over many scenes, as a Ray Data job on the cluster."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Query, Request, status

from search_spaces.errors import Conflict

from ..public import PredictionPublic
from ..responses import CONFLICT, NO_CLUSTER, NOT_FOUND
from ..specs import PredictionSpec
from ..states import TERMINAL, State
from ..store import PredictionJob, Store
from .deps import cancel_job, get_launcher, get_store_dep
from .experiments import DASHBOARD_NOTE

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])

MODULE = "service.predict_driver"


def prediction_public(job: PredictionJob) -> PredictionPublic:
    public = PredictionPublic.model_validate(job, from_attributes=True)
    return public.model_copy(update={"dashboard_note": DASHBOARD_NOTE if job.dashboard_url else None})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PredictionPublic, responses=NO_CLUSTER)
def submit_prediction(
    spec: PredictionSpec, request: Request, store: Store = Depends(get_store_dep)
) -> PredictionPublic:
    """Check the model, the output folder and every scene's bands, then submit the job (nothing stored on a 422).

    The model actors write each scene's COG themselves (``write_on: workers``, the default), so ``out``
    must be one folder every node of the cluster sees at the same path (NFS, a mounted bucket); a
    scene whose mask the job's driver cannot see there fails, saying so. Without a shared folder, ask
    ``write_on: driver``: the actors send each blended scene to the driver, which writes it (slower).
    """
    from ..prediction_checks import check_prediction

    check_prediction(spec, request.app.state.settings, store)
    launcher = get_launcher(request)
    job = store.create_prediction(spec.name, spec.model_id, spec.model_dump(mode="json"))
    try:
        submitted = launcher.submit("prediction", job.id, module=MODULE)
    except BaseException:
        store.delete_prediction(job.id)
        raise
    job = store.update_prediction(job.id, job_id=submitted.job_id, dashboard_url=submitted.dashboard_url)
    return prediction_public(job)


@router.get("", response_model=list[PredictionPublic])
def list_predictions(
    limit: int = Query(100, ge=1, le=1000), store: Store = Depends(get_store_dep)
) -> list[PredictionPublic]:
    return [prediction_public(j) for j in store.list_predictions(limit)]


@router.get("/{prediction_id}", response_model=PredictionPublic, responses=NOT_FOUND)
def get_prediction(prediction_id: str, store: Store = Depends(get_store_dep)) -> PredictionPublic:
    return prediction_public(store.get_prediction(prediction_id))


@router.post(
    "/{prediction_id}/cancel", response_model=PredictionPublic, responses={**NOT_FOUND, **CONFLICT, **NO_CLUSTER}
)
def cancel_prediction(prediction_id: str, request: Request, store: Store = Depends(get_store_dep)) -> PredictionPublic:
    cancelled = cancel_job(
        request, "prediction job", store.get_prediction(prediction_id),
        lambda: store.update_prediction(prediction_id, state=State.CANCELLED, error="cancelled by user"),
    )
    return prediction_public(cancelled)


@router.post(
    "/{prediction_id}/resume", response_model=PredictionPublic, responses={**NOT_FOUND, **CONFLICT, **NO_CLUSTER}
)
def resume_prediction(prediction_id: str, request: Request, store: Store = Depends(get_store_dep)) -> PredictionPublic:
    """Run the job again: scenes whose outputs are complete are skipped, the rest (failed ones too) are redone."""
    job = store.get_prediction(prediction_id)
    launcher = get_launcher(request)
    if job.state not in TERMINAL and job.job_id:
        job_status = launcher.status(job.job_id)
        if job_status not in (None, "FAILED", "STOPPED", "SUCCEEDED"):
            raise Conflict(f"prediction job {prediction_id} is still running (Ray job {job.job_id} is {job_status})")
    match = re.search(r"-r(\d+)$", job.job_id or "")
    attempt = (int(match.group(1)) if match else 1) + 1
    store.reopen_prediction(prediction_id)
    submitted = launcher.submit("prediction", prediction_id, module=MODULE, attempt=attempt)
    job = store.update_prediction(prediction_id, job_id=submitted.job_id, dashboard_url=submitted.dashboard_url)
    return prediction_public(job)
