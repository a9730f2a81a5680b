"""Prometheus metrics and the per-request middleware (request id, latency, one JSON access-log line).

``/metrics`` is computed from two places: request counters and latency histograms kept in this
process, and the store, read at scrape time (experiments, trials and pretraining jobs by state, the
queue of pending experiments, trial durations from the trials' timestamps). Reading the store at
scrape time keeps the numbers right across API restarts and replicas, which process-local counters
of state changes would not be.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from . import logs
from .states import State
from .store import Store

__all__ = ["Metrics", "RequestMiddleware", "router"]

log = logging.getLogger("geonas.http")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRIAL_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class _StoreCollector:
    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self):  # no samples at registration: the store is read at scrape time only
        return []

    def collect(self):
        counts = self.store.state_counts()
        for key, help_text in (
            ("experiments", "Experiments by state."),
            ("trials", "Trials (stage 1 and 2) by state."),
            ("pretraining", "CSF pretraining jobs by state."),
        ):
            family = GaugeMetricFamily(f"geonas_{key}", help_text, labels=["state"])
            for state in State:
                family.add_metric([str(state)], counts[key].get(str(state), 0))
            yield family
        yield GaugeMetricFamily(
            "geonas_queue_length",
            "Experiments submitted and not yet running.",
            value=counts["experiments"].get(str(State.PENDING), 0),
        )
        cumulative, count, total = self.store.trial_duration_histogram(TRIAL_BUCKETS)
        buckets = [(str(float(b)), n) for b, n in zip(TRIAL_BUCKETS, cumulative, strict=True)]
        buckets.append(("+Inf", count))
        yield HistogramMetricFamily(
            "geonas_trial_duration_seconds",
            "Wall time of finished trials, creation to last update.",
            buckets=buckets,
            sum_value=total,
        )


class Metrics:
    """The app's registry: its own (not the global one) so several apps in one process do not clash."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "geonas_http_request_duration_seconds",
            "Request latency by route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "geonas_http_requests_total",
            "Requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.cached_reads = Counter(
            "geonas_http_cached_reads_total",
            "Leaderboard and trial-page requests answered before routing (routes/cached_reads.py).",
            ["route"],
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))


class RequestMiddleware:
    """ASGI middleware: request id in and out (``X-Request-ID``), latency by route, a JSON access line."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
        token = logs.request_id.set(rid)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], route).observe(elapsed)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={"route": route, "status": status, "ms": round(elapsed * 1000, 2), "request_id": rid},
            )
            logs.request_id.reset(token)


router = APIRouter(tags=["meta"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text."}},
)
def metrics(request: Request) -> Response:
    """Prometheus text format; aggregate counts only (no names or ids), so it needs no token."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
