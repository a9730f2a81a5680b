"""``/v1/leaderboard``: completed models ranked by mIoU across experiments, with the Pareto front."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ..specs import Leaderboard, LeaderboardRow
from ..store import Store
from .deps import get_store_dep

router = APIRouter(prefix="/v1", tags=["leaderboard"])


def pareto_flags(points: list[tuple[float, float | None]]) -> list[bool]:
    """True for (mIoU, latency) points no other point beats on both (higher mIoU, lower latency)."""
    flags = []
    for i, (miou, lat) in enumerate(points):
        if lat is None:
            flags.append(False)
            continue
        dominated = any(
            j != i
            and other_lat is not None
            and other_miou >= miou
            and other_lat <= lat
            and (other_miou > miou or other_lat < lat)
            for j, (other_miou, other_lat) in enumerate(points)
        )
        flags.append(not dominated)
    return flags


@router.get("/leaderboard", response_model=Leaderboard)
def leaderboard(
    max_latency_ms: float | None = Query(None, gt=0, description="Only models at or under this latency."),
    device: str | None = Query(None, description="Only latencies measured on this device profile."),
    stage: int | None = Query(None, ge=1, le=2, description="2 = fine-tuned models only."),
    limit: int = Query(50, ge=1, le=1000),
    store: Store = Depends(get_store_dep),
) -> Leaderboard:
    candidates = store.leaderboard_candidates(max_latency_ms, device, stage)
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
    return Leaderboard(rows=rows[:limit])
