"""``/v1/leaderboard``: completed models ranked by mIoU across experiments, with the Pareto front."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from search_spaces.feasibility import target_flags

from ..auth import Principal
from ..public import Leaderboard, LeaderboardRow
from ..specs import LeaderboardQuery
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


@router.get("/leaderboard", response_model=Leaderboard)
async def leaderboard(request: Request, query: Annotated[LeaderboardQuery, Query()]) -> Leaderboard:
    """Completed trials ranked by mIoU across experiments; ``pareto`` marks the mIoU/latency front."""
    # Usually answered before routing (routes/cached_reads.py): here are the requests that layer passed on.
    return LEADERBOARD.response(request, {}, query)


def _board(store: Store, max_latency_ms: float | None, device: str | None, stage: int | None, limit: int) -> bytes:
    # Only rows with an mIoU at least the limit-th's can dominate the shown rows, so the top `limit`
    # (and ties) are all the front needs: the query stays an index scan however many trials exist.
    candidates = store.leaderboard_candidates(max_latency_ms, device, stage, limit=limit)
    flags = pareto_flags([(t.miou or 0.0, t.latency_ms) for t, _ in candidates])
    rows = [
        LeaderboardRow(
            **_target(t, exp),
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


def _target(trial, experiment) -> dict[str, Any]:
    """Whether the row meets its experiment's latency target (the one feasibility rule), and its flags."""
    latency = (experiment.spec or {}).get("latency") or {}
    target = latency.get("target_ms")
    checks = [h["latency_check"] for h in trial.history or () if isinstance(h, dict) and h.get("latency_check")]
    margin = float(latency.get("margin", 0.1))
    meets, flags = target_flags(trial.latency_ms, target, margin, checks[-1] if checks else None)
    return {"meets_target": meets, "flags": flags}


def _key(principal: Principal, path: dict[str, str], q: LeaderboardQuery) -> tuple:
    """The board is per owner (an admin's is everyone's), and a function of the trials table alone."""
    owner = None if principal.admin else principal.name
    return ("leaderboard", owner, q.max_latency_ms, q.device, q.stage, q.limit)


LEADERBOARD = cached_read(
    CachedRead(
        "/v1/leaderboard",
        LeaderboardQuery,
        key=_key,
        build=lambda store, path, q: _board(store, q.max_latency_ms, q.device, q.stage, q.limit),
    )
)
