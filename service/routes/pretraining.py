"""``/v1/pretraining`` (CSF jobs on the same cluster) and ``/v1/backbones`` (their encoders)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, status

from ..public import BackbonePublic, ExperimentCreated, PretrainingPublic
from ..responses import CONFLICT, NO_CLUSTER, NOT_FOUND
from ..specs import PretrainingSpec
from ..states import State
from ..store import PretrainingJob, Store
from ..validation import check_pretraining_data
from .deps import cancel_job, get_launcher, get_store_dep
from .experiments import DASHBOARD_NOTE

router = APIRouter(tags=["pretraining"])


def pretraining_public(job: PretrainingJob) -> PretrainingPublic:
    return PretrainingPublic.model_validate(job, from_attributes=True)


def backbone_public(job: PretrainingJob) -> BackbonePublic:
    encoder = job.encoder or {}
    return BackbonePublic(
        id=job.id,
        name=job.name,
        backbone=encoder.get("backbone", job.spec.get("backbone", "")),
        in_chans=int(encoder.get("in_chans", 0)),
        bands=list(encoder.get("band_names", [])),
        steps=int(encoder.get("steps", job.step)),
        created_at=job.created_at,
    )


@router.post(
    "/v1/pretraining", status_code=status.HTTP_201_CREATED, response_model=ExperimentCreated, responses=NO_CLUSTER
)
def submit_pretraining(
    spec: PretrainingSpec, request: Request, store: Store = Depends(get_store_dep)
) -> ExperimentCreated:
    check_pretraining_data(spec, request.app.state.settings)
    launcher = get_launcher(request)
    job = store.create_pretraining(spec.name, spec.model_dump(mode="json"))
    try:
        submitted = launcher.submit("pretraining", job.id, module="service.pretrain_driver")
    except BaseException:
        store.delete_pretraining(job.id)
        raise
    store.update_pretraining(job.id, job_id=submitted.job_id, dashboard_url=submitted.dashboard_url)
    return ExperimentCreated(
        id=job.id,
        state=job.state,
        job_id=submitted.job_id,
        dashboard_url=submitted.dashboard_url,
        dashboard_note=DASHBOARD_NOTE,
    )


@router.get("/v1/pretraining", response_model=list[PretrainingPublic])
def list_pretraining(store: Store = Depends(get_store_dep)) -> list[PretrainingPublic]:
    return [pretraining_public(j) for j in store.list_pretraining()]


@router.get("/v1/pretraining/{job_id}", response_model=PretrainingPublic, responses=NOT_FOUND)
def get_pretraining(job_id: str, store: Store = Depends(get_store_dep)) -> PretrainingPublic:
    return pretraining_public(store.get_pretraining(job_id))


@router.post(
    "/v1/pretraining/{job_id}/cancel",
    response_model=PretrainingPublic,
    responses={**NOT_FOUND, **CONFLICT, **NO_CLUSTER},
)
def cancel_pretraining(job_id: str, request: Request, store: Store = Depends(get_store_dep)) -> PretrainingPublic:
    cancelled = cancel_job(
        request, "pretraining job", store.get_pretraining(job_id),
        lambda: store.update_pretraining(job_id, state=State.CANCELLED, error="cancelled by user"),
    )
    return pretraining_public(cancelled)


@router.get("/v1/backbones", response_model=list[BackbonePublic])
def list_backbones(store: Store = Depends(get_store_dep)) -> list[BackbonePublic]:
    """Encoders of finished CSF jobs; name one in an experiment as ``backbone: {csf: <id>}``."""
    return [backbone_public(j) for j in store.list_pretraining() if j.state == State.COMPLETED and j.artifact]
