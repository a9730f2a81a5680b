"""The one feasibility rule, and the check that the model registered at the end still keeps it.

A latency target ``T`` with a margin ``m`` is met when ``lat <= T · (1 + m)``. Stage 1 prunes what
breaks it (hard reward), stage 2 fine-tunes only the trials that keep it, and the fine-tuned model is
measured again, fresh, on the host that registers it (:func:`recheck`): a model whose new number
breaks the rule is flagged ``over_target``, and one whose new number is more than ``tolerance`` away
from the stage-1 number it was ranked by is flagged ``latency_disagrees``. A flagged model is still
registered (its weights are real), never silently as one that meets the budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from search_spaces.errors import SpecError

__all__ = ["within_target", "is_infeasible", "latency_constraint", "result_constraint", "LatencyCheck", "recheck",
           "target_flags"]


def _bad(value: float | None) -> bool:
    return value is None or not math.isfinite(float(value))


def _check_margin(margin: float) -> None:
    if margin < 0:
        raise SpecError(f"infeasibility margin must be >= 0, got {margin}", "margin")


def within_target(latency_ms: float | None, target_ms: float, margin: float = 0.0) -> bool:
    """``lat <= T · (1 + margin)``; ``margin`` is a fraction (0.1 = up to 10 % over still counts).

    A missing or non-finite latency does not meet a target.
    """
    _check_margin(margin)
    if _bad(latency_ms):
        return False
    return float(latency_ms) <= target_ms * (1.0 + margin)  # type: ignore[arg-type]


def is_infeasible(latency_ms: float | None, target_ms: float, margin: float = 0.0) -> bool:
    """Whether a hard target rules an architecture out before training: it breaks :func:`within_target`.

    A missing latency is not infeasible: the trial then trains and fails or succeeds on its own.
    """
    _check_margin(margin)
    return not _bad(latency_ms) and not within_target(latency_ms, target_ms, margin)


def latency_constraint(latency_ms: float | None, target_ms: float, margin: float = 0.0) -> float | None:
    """The rule as a number for searchers that model feasibility: ``lat / (T · (1 + margin)) - 1``.

    ``<= 0`` exactly when :func:`within_target`; ``None`` for a missing or non-finite latency.
    """
    _check_margin(margin)
    if _bad(latency_ms):
        return None
    return float(latency_ms) / (target_ms * (1.0 + margin)) - 1.0  # type: ignore[arg-type]


def result_constraint(result: dict[str, Any], target_ms: float, margin: float = 0.0) -> float | None:
    """:func:`latency_constraint` of a stage-1 trial's reported result (its ``latency_ms``)."""
    return latency_constraint(result.get("latency_ms"), target_ms, margin)


@dataclass(frozen=True)
class LatencyCheck:
    """Stage 1's latency of a model against its fresh stage-2 measurement, and what follows."""

    stage1_ms: float | None
    stage2_ms: float
    rel_diff: float | None  # |stage2 - stage1| / stage1
    tolerance: float
    agrees: bool
    target_ms: float | None
    limit_ms: float | None  # T · (1 + margin)
    meets_target: bool | None  # None: no target

    @property
    def flags(self) -> list[str]:
        return _flags(self.meets_target, self.agrees)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flags": self.flags}


def recheck(
    stage1_ms: float | None, stage2_ms: float, target_ms: float | None, margin: float, tolerance: float
) -> LatencyCheck:
    """Compare the fresh measurement with stage 1's and apply the feasibility rule to the fresh one."""
    rel = None if _bad(stage1_ms) or not stage1_ms else abs(stage2_ms - stage1_ms) / stage1_ms
    return LatencyCheck(
        stage1_ms=stage1_ms,
        stage2_ms=stage2_ms,
        rel_diff=rel,
        tolerance=tolerance,
        agrees=rel is not None and rel <= tolerance,
        target_ms=target_ms,
        limit_ms=None if target_ms is None else target_ms * (1.0 + margin),
        meets_target=None if target_ms is None else within_target(stage2_ms, target_ms, margin),
    )


def target_flags(
    latency_ms: float | None, target_ms: float | None, margin: float, check: dict[str, Any] | None = None
) -> tuple[bool | None, list[str]]:
    """(meets the target?, flags) for a leaderboard row: the rule on its latency, and a stage-2 check's
    disagreement when there was one. ``None`` when the experiment set no target."""
    meets = None if target_ms is None else within_target(latency_ms, target_ms, margin)
    return meets, _flags(meets, check is None or check.get("agrees", True))


def _flags(meets_target: bool | None, agrees: bool) -> list[str]:
    return (["over_target"] if meets_target is False else []) + ([] if agrees else ["latency_disagrees"])
