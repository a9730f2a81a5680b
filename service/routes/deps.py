"""Request-scoped dependencies: the store and the job launcher, both held on ``app.state``."""

from __future__ import annotations

from fastapi import Request

from search_spaces.errors import ClusterError

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
