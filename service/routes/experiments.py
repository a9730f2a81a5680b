"""``/v1/experiments``: submit, list, inspect, and the trials of one experiment."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic_core import to_json

from ..public import ExperimentCreated, ExperimentPublic, TrialPublic
from ..responses import CONFLICT, NO_CLUSTER, NOT_FOUND
from ..specs import MAX_OFFSET, ExperimentSpec, ResumeRequest, TrialPageQuery
from ..states import State
from ..store import PAGE_COLUMNS, Experiment, Store
from ..validation import check_backbone, check_dataset
from .cached_reads import CachedRead, cached_read
from .deps import cancel_job, get_launcher, get_store_dep

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])

DASHBOARD_NOTE = "The Ray dashboard asks for a token: run `ray get-auth-token` on the head node and enter it once."


def experiment_public(exp: Experiment, trials_done: int) -> ExperimentPublic:
    return ExperimentPublic(
        id=exp.id,
        name=exp.name,
        state=exp.state,
        spec=exp.spec,
        job_id=exp.job_id,
        dashboard_url=exp.dashboard_url,
        error=exp.error,
        trials_done=trials_done,
        trials_total=int(exp.spec.get("budget", {}).get("trials", 0)),
        created_at=exp.created_at,
        updated_at=exp.updated_at,
    )


#: A trial's answer, in the order of :class:`TrialPublic`'s fields: the store reads a page's rows so.
_FIELDS = tuple(TrialPublic.model_fields)
if _FIELDS != PAGE_COLUMNS:
    raise RuntimeError("store.PAGE_COLUMNS must list TrialPublic's fields in their order")
_ARCH, _HISTORY, _CREATED, _UPDATED = (_FIELDS.index(f) for f in ("arch", "history", "created_at", "updated_at"))
#: Stands in for a stored JSON column while a page is encoded; ``to_json`` writes it as ``_SPLICE``.
_MARK = "\x00"
_SPLICE = b'"\\u0000"'


def _stored_json(text: str | None, empty: bytes) -> bytes:
    """A JSON column's stored text, as is: it was written by ``json.dumps``, so it is JSON unless it
    holds a non-finite float (``NaN``, ``Infinity``), which is decoded and written again as null."""
    if text is None or text == "null":
        return empty
    if "NaN" in text or "Infinity" in text:
        return to_json(json.loads(text), inf_nan_mode="null")
    return text.encode()


def _utc(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as :data:`specs.UtcDateTime` serializes (the store keeps naive UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def trial_page_json(rows: Sequence[Sequence[Any]]) -> bytes:
    """A page of :meth:`Store.trial_page` rows (:data:`store.PAGE_COLUMNS`) as the JSON of
    ``list[TrialPublic]``, built directly.

    Validating each row into a model and encoding it again cost more than the query. Instead the
    whole page is one call of pydantic-core's encoder (NaN and infinities written as null, as the model
    would), with a marker where each row's ``arch`` and ``history`` go; their stored JSON text is then
    spliced in at the markers, never decoded. For a 100-trial page the encoding takes about a third of
    the standard library encoder's time for the same dicts, and the whole build 0.57x the time of
    encoding row by row.
    """
    items, stored = [], []
    for row in rows:
        item = dict(zip(_FIELDS, row, strict=True))
        item["arch"] = item["history"] = _MARK
        item["created_at"], item["updated_at"] = _utc(row[_CREATED]), _utc(row[_UPDATED])
        stored += (_stored_json(row[_ARCH], b"null"), _stored_json(row[_HISTORY], b"[]"))
        items.append(item)
    parts = to_json(items, inf_nan_mode="null").split(_SPLICE)
    if len(parts) != len(stored) + 1:  # a text field's encoding held the marker's: decode the columns instead
        columns = iter(json.loads(s) for s in stored)
        for item in items:
            item["arch"], item["history"] = next(columns), next(columns)
        return to_json(items, inf_nan_mode="null")
    out = [parts[0]]
    for column, part in zip(stored, parts[1:], strict=True):
        out += (column, part)
    return b"".join(out)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ExperimentCreated, responses=NO_CLUSTER)
def submit_experiment(
    spec: ExperimentSpec,
    request: Request,
    store: Store = Depends(get_store_dep),
) -> ExperimentCreated:
    check_dataset(spec, request.app.state.settings)
    check_backbone(spec, request.app.state.settings, store)
    launcher = get_launcher(request)  # after validation: a bad spec is a 422 even with no cluster
    exp = store.create_experiment(spec.name, spec.model_dump(mode="json"))
    try:
        job = launcher.submit("experiment", exp.id)
    except BaseException:
        store.delete_experiment(exp.id)  # never leave a record whose job does not exist
        raise
    store.update_experiment(exp.id, job_id=job.job_id, dashboard_url=job.dashboard_url)
    return ExperimentCreated(
        id=exp.id,
        state=exp.state,
        job_id=job.job_id,
        dashboard_url=job.dashboard_url,
        dashboard_note=DASHBOARD_NOTE,
    )


@router.get("", response_model=list[ExperimentPublic])
def list_experiments(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    store: Store = Depends(get_store_dep),
) -> list[ExperimentPublic]:
    experiments = store.list_experiments(limit, offset)
    counts = store.trial_counts([e.id for e in experiments])
    return [experiment_public(e, counts.get(e.id, 0)) for e in experiments]


@router.get("/{experiment_id}", response_model=ExperimentPublic, responses=NOT_FOUND)
def get_experiment(experiment_id: str, store: Store = Depends(get_store_dep)) -> ExperimentPublic:
    exp = store.get_experiment(experiment_id)
    return experiment_public(exp, store.trial_counts([exp.id]).get(exp.id, 0))


TRIAL_PAGE = cached_read(
    CachedRead(
        "/v1/experiments/{experiment_id}/trials",
        TrialPageQuery,
        key=lambda principal, path, q: ("trials", path["experiment_id"], q.stage, q.limit, q.offset),
        build=lambda store, path, q: trial_page_json(
            store.trial_page(path["experiment_id"], q.stage, limit=q.limit, offset=q.offset)
        ),
        check=lambda store, path: store.check_experiment(path["experiment_id"]),  # owners are memoised
    )
)


@router.get("/{experiment_id}/trials", response_model=list[TrialPublic], responses=NOT_FOUND)
async def list_trials(
    experiment_id: str, request: Request, query: Annotated[TrialPageQuery, Query()]
) -> list[TrialPublic]:
    """A page of the experiment's trials, in creation order."""
    # Usually answered before routing (routes/cached_reads.py): here are the requests that layer
    # passed on, which end in an error or in this same answer.
    return TRIAL_PAGE.response(request, {"experiment_id": experiment_id}, query)


@router.post(
    "/{experiment_id}/cancel", response_model=ExperimentPublic, responses={**NOT_FOUND, **CONFLICT, **NO_CLUSTER}
)
def cancel_experiment(experiment_id: str, request: Request, store: Store = Depends(get_store_dep)) -> ExperimentPublic:
    """Stop the experiment's Ray Job and mark its open trials cancelled."""
    def record() -> None:
        store.update_experiment(experiment_id, state=State.CANCELLED, error="cancelled by user")
        store.cancel_open_trials(experiment_id, "experiment cancelled")

    cancel_job(request, "experiment", store.get_experiment(experiment_id), record)
    return get_experiment(experiment_id, store)


@router.post(
    "/{experiment_id}/resume", response_model=ExperimentCreated, responses={**NOT_FOUND, **CONFLICT, **NO_CLUSTER}
)
def resume_experiment(
    experiment_id: str,
    request: Request,
    body: ResumeRequest | None = None,
    store: Store = Depends(get_store_dep),
) -> ExperimentCreated:
    """Restart a stopped experiment's driver from its storage, optionally with a larger budget."""
    from .. import resume

    store.get_experiment(experiment_id)  # 404 before anything else, also with no cluster
    job = resume.resume(store, get_launcher(request), experiment_id, body.trials if body else None)
    exp = store.get_experiment(experiment_id)
    return ExperimentCreated(
        id=exp.id, state=exp.state, job_id=job.job_id, dashboard_url=job.dashboard_url, dashboard_note=DASHBOARD_NOTE
    )
