"""The FastAPI application factory: routes, the one error handler, and shared dependencies."""

from __future__ import annotations

import hashlib

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from search_spaces.errors import GeonasError, SpecError

from . import metrics as metrics_routes
from . import pages
from .auth import Authenticator, announce, authenticate, bearer_scheme
from .jobs import JobLauncher
from .limits import BodySizeLimit, TokenBucket, rate_limit
from .metrics import Metrics, RequestMiddleware
from .responses import COMMON
from .routes import experiments, leaderboard, models, predictions, pretraining
from .routes.cache import OwnerMemo, SharedResponses, VersionClock, VersionedCache
from .routes.cached_reads import CachedReads
from .settings import Settings, get_settings
from .store import get_store

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, launcher: JobLauncher | None = None) -> FastAPI:
    """Build the app. ``launcher`` submits Ray Jobs; without one, the cluster from settings is used."""
    settings = settings or get_settings()
    app = FastAPI(
        title="geonas",
        version="0.1.0",
        description="Latency-constrained NAS for satellite-image segmentation, on Ray.",
    )
    app.state.settings = settings
    app.state.store = get_store(settings.resolved_database_url)
    app.state.launcher = launcher
    app.state.auth_required = announce(settings)
    app.state.authenticator = Authenticator(app.state.store)
    app.state.rate_limiter = (
        TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst) if settings.rate_limit_per_s > 0 else None
    )
    app.state.metrics = Metrics(app.state.store)
    # leaderboard and trial pages, keyed on the trials' version
    cache_bytes = settings.response_cache_mb * 2**20
    shared = None
    if settings.shared_response_cache and cache_bytes:
        digest = hashlib.sha256(settings.resolved_database_url.encode()).hexdigest()[:16]
        shared = SharedResponses(settings.home / "cache" / f"responses-{digest}.sqlite", cache_bytes)
    app.state.response_cache = VersionedCache(max_entries=65_536, max_bytes=cache_bytes, shared=shared)
    app.state.version_clock = VersionClock(app.state.store.write_version, settings.cache_max_age_s)
    app.state.store.on_write(app.state.version_clock.reset)  # this process's writes show at once
    app.state.owners = OwnerMemo()
    app.add_middleware(CachedReads)  # innermost of ours: after the size limit, inside the metrics
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics)  # outermost: sees every answer

    @app.exception_handler(GeonasError)
    async def _geonas_error(request: Request, exc: GeonasError) -> JSONResponse:
        body: dict = {"detail": str(exc), "error": type(exc).__name__}
        if isinstance(exc, SpecError) and exc.field:
            body["detail"] = [{"loc": ["body", *exc.field.split(".")], "msg": str(exc), "type": "value_error"}]
        return JSONResponse(status_code=exc.status_code, content=body)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        """Liveness, and whether this API requires tokens (it says so at start too)."""
        return {"status": "ok", "auth": "on" if app.state.auth_required else "off"}

    guarded = {
        "dependencies": [Depends(bearer_scheme), Depends(authenticate), Depends(rate_limit)],
        "responses": COMMON,
    }
    app.include_router(experiments.router, **guarded)
    app.include_router(leaderboard.router, **guarded)
    app.include_router(models.router, **guarded)
    app.include_router(pretraining.router, **guarded)
    app.include_router(predictions.router, **guarded)
    app.include_router(metrics_routes.router)
    app.include_router(pages.shell_router)  # HTML shells: no data, public
    app.include_router(pages.data_router, **guarded)
    return app
