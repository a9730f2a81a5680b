"""``/v1/leaderboard``: completed models ranked by mIoU across experiments, with the Pareto front."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from ..auth import Principal, scoped_store
from ..specs import Leaderboard, LeaderboardQuery, LeaderboardRow
from ..store import Store
from .cached_reads import CachedRead, cached_read

router = APIRouter(prefix="/v1", tags=["leaderboard"])


def pareto_flags(points: list[tuple[float, float | None]]) -> list[bool]:
    """True for (mIoU, latency) points no other point beats on both (higher mIoU, lower latency).

    O(n log n): sorted by latency, a point is on the front when its mIoU beats every strictly faster
    point's and is the best among points of equal latency. Points without a latency are never on it.
    """
    flags = [False] * len(points)
    order = sorted((lat, -miou, i) for i, (miou, lat) in enumerate(points) if lat is not None)
    best_faster = float("-inf")
    k = 0
    while k < len(order):
        lat = order[k][0]
        group_end = k
        while group_end < len(order) and order[group_end][0] == lat:
            group_end += 1
        group_best = -order[k][1]  # sorted by -miou within a latency: the first is the best
        for _, neg_miou, i in order[k:group_end]:
            flags[i] = -neg_miou == group_best and group_best > best_faster
        best_faster = max(best_faster, group_best)
        k = group_end
    return flags


def leaderboard_key(principal: Principal, query: LeaderboardQuery) -> Hashable:
    owner = None if principal.admin else principal.name
    return ("leaderboard", owner, query.max_latency_ms, query.device, query.stage, query.limit)


@router.get("/leaderboard", response_model=Leaderboard)
async def leaderboard(request: Request, query: Annotated[LeaderboardQuery, Query()]) -> Leaderboard:
    """Completed trials ranked by mIoU across experiments; ``pareto`` marks the mIoU/latency front."""
    # A cached board is answered before routing (routes/cached_reads.py); here are the misses. On the
    # event loop: a rebuild runs inline, which under load beat the thread pool (routes/cache.py).
    state = request.app.state
    store = scoped_store(request)  # not a Depends: on this hot path FastAPI's dependency solving cost more
    version = state.version_clock.current("trials")  # the board is a function of the trials table alone
    q = query
    body = state.response_cache.get_or_build(
        leaderboard_key(store.principal, q),
        version,
        lambda: _board(store, q.max_latency_ms, q.device, q.stage, q.limit),
    )
    return Response(body, media_type="application/json")


cached_read(
    CachedRead(
        "/v1/leaderboard", LeaderboardQuery, key=lambda principal, path, query: leaderboard_key(principal, query)
    )
)


def _board(store: Store, max_latency_ms: float | None, device: str | None, stage: int | None, limit: int) -> bytes:
    # Only rows with an mIoU at least the limit-th's can dominate the shown rows, so the top `limit`
    # (and ties) are all the front needs: the query stays an index scan however many trials exist.
    candidates = store.leaderboard_candidates(max_latency_ms, device, stage, limit=limit)
    flags = pareto_flags([(t.miou or 0.0, t.latency_ms) for t, _ in candidates])
    rows = [
        LeaderboardRow(
            rank=rank,
            experiment_id=exp.id,
            experiment_name=exp.name,
            trial_id=t.id,
            kind=t.kind,
            arch_hash=t.arch_hash,
            miou=t.miou or 0.0,
            latency_ms=t.latency_ms,
            latency_device=t.latency_device,
            params=t.params,
            reward=t.reward,
            pareto=flag,
        )
        for rank, ((t, exp), flag) in enumerate(zip(candidates, flags, strict=True), start=1)
    ]
    return Leaderboard(rows=rows[:limit]).model_dump_json().encode()
