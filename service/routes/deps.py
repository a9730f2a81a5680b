"""Request-scoped dependencies: the store and the job launcher, both held on ``app.state``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

from search_spaces.errors import ClusterError, Conflict

from ..jobs import JobLauncher
from ..store import Store


async def get_store_dep(request: Request) -> Store:
    """The store as the caller sees it (their own resources; all for an admin): see ``auth.ScopedStore``."""
    from ..auth import scoped_store

    return scoped_store(request)  # type: ignore[return-value]  # quacks like Store


def get_launcher(request: Request) -> JobLauncher:
    launcher = request.app.state.launcher
    if launcher is None:
        settings = request.app.state.settings
        if not settings.ray_address:
            raise ClusterError("no Ray cluster is configured: start the API with `geonas serve` or set RAY_ADDRESS")
        from cluster.connect import jobs_url

        launcher = JobLauncher(jobs_url(settings.ray_address), settings)
        request.app.state.launcher = launcher
    return launcher


def cancel_job(request: Request, what: str, job: Any, record: Callable[[], Any]) -> Any:
    """Cancel a job-backed resource (an experiment, a pretraining or a prediction job) in the one safe
    order: refuse a finished one (409), get the launcher first (a 503 before anything is written),
    ``record`` the cancel, then stop the Ray Job. Recording first matters: the stopped driver records
    its own end as failed, and the store keeps whichever terminal state lands first. Returns what
    ``record`` returns."""
    from ..states import TERMINAL

    if job.state in TERMINAL:
        raise Conflict(f"{what} {job.id} is already {job.state}")
    launcher = get_launcher(request) if job.job_id else None
    recorded = record()
    if launcher is not None:
        launcher.stop(job.job_id)
    return recorded
