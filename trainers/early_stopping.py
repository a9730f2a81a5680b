"""Early stopping for stage 1: ASHA on what the searcher optimises, blind to trials pruned for latency.

The searcher learns from the reward (mIoU with the latency term), so ASHA ranks trials by the same
number unless told to use raw mIoU. A trial pruned by a hard latency target never trained: it reports
no mIoU, and its result must not sit in ASHA's rungs, where a 0 would pull the cut-off down and keep
poor trials running. :class:`FeasibleASHA` is Ray Tune's ASHA that never sees such results.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

__all__ = ["FeasibleASHA", "make_scheduler"]


class FeasibleASHA(ASHAScheduler):
    """ASHA that skips results marked ``pruned`` (an architecture that broke the latency target)."""

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        if result.get("pruned"):
            return TrialScheduler.CONTINUE  # the trial ends by itself: it reported once and returned
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        if result.get("pruned"):
            return
        super().on_trial_complete(tune_controller, trial, result)


def make_scheduler(
    kind: str, metric: str, epochs: int, grace_period: int, reduction_factor: int
) -> TrialScheduler:
    """``asha``: :class:`FeasibleASHA` on ``metric`` (max); ``none`` or too few epochs to stop: FIFO."""
    if kind == "none" or epochs <= grace_period:
        return FIFOScheduler()
    return FeasibleASHA(
        time_attr="training_iteration",
        metric=metric,
        mode="max",
        max_t=epochs,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )
