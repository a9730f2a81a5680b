"""The typed boundary, outbound: what the API returns for each resource.

Database rows are never returned directly: each resource has a ``*Public`` schema here; what users
submit is in :mod:`service.specs`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from .specs import UtcDateTime

__all__ = [
    "PredictionPublic",
    "PretrainingPublic",
    "BackbonePublic",
    "ExperimentCreated",
    "ExperimentPublic",
    "TrialPublic",
    "ModelPublic",
    "LeaderboardRow",
    "Leaderboard",
]


class _JobPublic(BaseModel):
    """What every resource run as a Ray Job (experiment, pretraining, prediction) shows."""

    id: str
    name: str
    state: str
    spec: dict[str, Any]
    job_id: str | None
    dashboard_url: str | None
    error: str | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class PredictionPublic(_JobPublic):
    model_id: str
    dashboard_note: str | None = None
    progress: dict[str, Any]
    scenes: list[dict[str, Any]]
    mosaic: str | None


class PretrainingPublic(_JobPublic):
    step: int
    loss_curve: list[dict[str, Any]]
    knn: dict[str, Any] | None
    artifact: str | None


class BackbonePublic(BaseModel):
    id: str
    name: str
    backbone: str
    in_chans: int
    bands: list[str]
    steps: int
    created_at: UtcDateTime


class ExperimentCreated(BaseModel):
    id: str
    state: str
    job_id: str | None
    dashboard_url: str | None
    dashboard_note: str | None = None


class ExperimentPublic(_JobPublic):
    trials_done: int
    trials_total: int


class TrialPublic(BaseModel):
    id: str
    experiment_id: str
    stage: int
    kind: str
    state: str
    arch_hash: str | None
    arch: dict[str, Any] | None
    epoch: int
    miou: float | None
    latency_ms: float | None
    params: int | None
    reward: float | None
    error: str | None
    node_id: str | None
    history: list[dict[str, Any]]
    created_at: UtcDateTime
    updated_at: UtcDateTime


class ModelPublic(BaseModel):
    id: str
    experiment_id: str
    trial_id: str | None
    kind: str
    arch_hash: str | None
    descriptor: dict[str, Any]
    miou: float | None
    latency_ms: float | None
    latency_device: str | None
    metrics: dict[str, Any]
    training: dict[str, Any]
    data: dict[str, Any]
    artifacts: list[str]
    created_at: UtcDateTime


class LeaderboardRow(BaseModel):
    rank: int
    experiment_id: str
    experiment_name: str
    trial_id: str
    kind: str
    arch_hash: str | None
    miou: float
    latency_ms: float | None
    latency_device: str | None
    params: int | None
    reward: float | None
    pareto: bool
    meets_target: bool | None = Field(
        None, description="Latency at most the experiment's target·(1+margin); null when it set no target."
    )
    flags: list[str] = Field(
        default_factory=list,
        description="over_target: the latency breaks the target; latency_disagrees: stage 2's fresh "
        "measurement is further from stage 1's than latency.recheck_tolerance.",
    )


class Leaderboard(BaseModel):
    rows: list[LeaderboardRow]
