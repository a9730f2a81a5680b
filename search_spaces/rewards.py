"""Rewards: one number from accuracy and latency, so every searcher optimises the same trade-off.

A registry (name → function of accuracy, latency and target). The experiment spec picks one and the
target ``T`` in ms on a named device:

- ``soft`` (MnasNet): ``acc · (lat/T)^w`` with ``w = -0.07`` on both sides of the target — a smooth
  trade-off; a faster model gains a little, a slower one loses a little.
- ``hard``: ``acc · min((lat/T)^β, 1)`` with ``β = -1`` — a slower model is scaled down by ``T/lat``,
  a faster one gains nothing.
- ``absolute`` (TuNAS): ``acc + β·|lat/T − 1|`` with ``β = -0.1`` — pulls the latency onto the target.

A failed trial (accuracy or latency missing or NaN) gets ``failure_penalty`` (0.0 unless given):
defined, never an exception, so one bad trial cannot stop an experiment.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from search_spaces.errors import SpecError
from search_spaces.feasibility import is_infeasible, within_target

__all__ = [
    "FAILURE_PENALTY",
    "register_reward",
    "compute_reward",
    "list_rewards",
    "is_infeasible",
    "within_target",
]

FAILURE_PENALTY = 0.0

RewardFn = Callable[..., float]
_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make ``fn(accuracy, latency_ms, target_ms, **params)`` available as ``name``."""

    def decorate(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return decorate


def list_rewards() -> list[str]:
    """Names of the registered reward functions, sorted."""
    return sorted(_REGISTRY)


@register_reward("soft")
def soft_reward(accuracy: float, latency_ms: float, target_ms: float, w: float = -0.07) -> float:
    return accuracy * (latency_ms / target_ms) ** w


@register_reward("hard")
def hard_reward(accuracy: float, latency_ms: float, target_ms: float, beta: float = -1.0) -> float:
    return accuracy * min((latency_ms / target_ms) ** beta, 1.0)


@register_reward("absolute")
def absolute_reward(accuracy: float, latency_ms: float, target_ms: float, beta: float = -0.1) -> float:
    return accuracy + beta * abs(latency_ms / target_ms - 1.0)


def _bad(value: float | None) -> bool:
    return value is None or not math.isfinite(float(value))


def compute_reward(
    name: str,
    accuracy: float | None,
    latency_ms: float | None,
    target_ms: float,
    *,
    failure_penalty: float = FAILURE_PENALTY,
    **params: float,
) -> float:
    """The reward ``name`` gives; ``failure_penalty`` when accuracy or latency is missing or not finite.

    ``params`` override the function's exponent (``w`` for soft, ``beta`` for hard and absolute).
    """
    if name not in _REGISTRY:
        raise SpecError(f"unknown reward {name!r}; valid rewards: {', '.join(list_rewards())}", "reward")
    if not (isinstance(target_ms, int | float) and math.isfinite(target_ms) and target_ms > 0):
        raise SpecError(f"latency target must be a positive number of ms, got {target_ms!r}", "target_ms")
    if _bad(accuracy) or _bad(latency_ms) or float(latency_ms) <= 0:  # type: ignore[arg-type]
        return float(failure_penalty)
    try:
        value = _REGISTRY[name](float(accuracy), float(latency_ms), float(target_ms), **params)  # type: ignore[arg-type]
    except TypeError as exc:
        raise SpecError(f"bad parameters {sorted(params)} for reward {name!r}: {exc}", "reward") from exc
    return float(value) if math.isfinite(value) else float(failure_penalty)
