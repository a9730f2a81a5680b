"""What one latency measurement says: :class:`LatencyResult`, and the input shapes it is keyed by."""

from __future__ import annotations

import math
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import SpecError

__all__ = ["InputShape", "LatencyResult", "check_shape", "utc_now"]

InputShape = tuple[int, int, int, int]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_shape(input_shape: Any) -> InputShape:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise SpecError(f"input shape must be 4 integers (B, C, H, W), got {input_shape!r}") from None
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise SpecError(f"input shape must be 4 positive integers (B, C, H, W), got {list(shape)}")
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class LatencyResult:
    """One measured latency and how far to trust it.

    ``median_ms`` is the estimate (``ratio * reference_ms`` when normalised, else ``direct_ms``; see the
    module doc), ``estimate_rse`` its relative uncertainty;
    ``raw_median_ms``, ``p90_ms`` and ``cv`` (std / mean) describe every kept sample, so a noisy
    measurement shows as such. ``clock`` is what was timed: ``thread-cpu`` (one-thread CPU profiles),
    ``wall``, or ``cuda-events``. ``rejected`` counts samples dropped because the OS preempted the process
    while they ran; ``stable`` is False when the repeat cap came before the estimate settled.
    """

    median_ms: float
    p90_ms: float
    cv: float
    repeats: int
    profile: str
    input_shape: InputShape
    measured_at: str = field(default_factory=utc_now)
    raw_median_ms: float = math.nan
    min_ms: float = math.nan
    rejected: int = 0
    stable: bool = True
    clock: str = "wall"
    direct_ms: float = math.nan
    reference_ms: float | None = None
    ratio: float | None = None
    estimate_rse: float = math.nan
    wall_s: float = 0.0
    host: str = field(default_factory=socket.gethostname)
    node: str | None = None  # the Ray node that measured, when a latency meter did
    machine: str | None = None  # machine_fingerprint() of the hardware and software that measured
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["input_shape"] = check_shape(values["input_shape"])
        return cls(**values)
