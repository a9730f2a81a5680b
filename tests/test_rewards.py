"""Reward functions: the formulas, the failure penalty, the registry and infeasible pruning."""

from __future__ import annotations

import math

import pytest

from search_spaces.errors import SpecError
from search_spaces.rewards import FAILURE_PENALTY, compute_reward, is_infeasible, list_rewards


def test_registry_lists_the_three_rewards():
    assert list_rewards() == ["absolute", "hard", "soft"]


def test_soft_is_mnasnet_both_sides():
    assert compute_reward("soft", 0.8, 10.0, 10.0) == pytest.approx(0.8)
    assert compute_reward("soft", 0.8, 20.0, 10.0) == pytest.approx(0.8 * 2**-0.07)
    assert compute_reward("soft", 0.8, 5.0, 10.0) == pytest.approx(0.8 * 0.5**-0.07)
    assert compute_reward("soft", 0.8, 5.0, 10.0) > 0.8 > compute_reward("soft", 0.8, 20.0, 10.0)


def test_hard_scales_slow_models_and_gives_fast_ones_nothing():
    assert compute_reward("hard", 0.8, 5.0, 10.0) == pytest.approx(0.8)
    assert compute_reward("hard", 0.8, 10.0, 10.0) == pytest.approx(0.8)
    assert compute_reward("hard", 0.8, 20.0, 10.0) == pytest.approx(0.4)
    assert compute_reward("hard", 0.8, 40.0, 10.0, beta=-2.0) == pytest.approx(0.05)


def test_absolute_is_tunas():
    assert compute_reward("absolute", 0.8, 10.0, 10.0) == pytest.approx(0.8)
    assert compute_reward("absolute", 0.8, 15.0, 10.0) == pytest.approx(0.8 - 0.05)
    assert compute_reward("absolute", 0.8, 5.0, 10.0) == pytest.approx(0.8 - 0.05)


@pytest.mark.parametrize("name", ["soft", "hard", "absolute"])
@pytest.mark.parametrize(
    "accuracy, latency", [(float("nan"), 5.0), (None, 5.0), (0.7, float("nan")), (0.7, None), (0.7, 0.0)]
)
def test_failed_trials_get_the_penalty(name, accuracy, latency):
    assert compute_reward(name, accuracy, latency, 10.0) == FAILURE_PENALTY
    assert compute_reward(name, accuracy, latency, 10.0, failure_penalty=-1.0) == -1.0


def test_unknown_reward_lists_valid_ones():
    with pytest.raises(SpecError, match="absolute, hard, soft"):
        compute_reward("fast", 0.8, 5.0, 10.0)


def test_bad_target_and_bad_parameters_are_spec_errors():
    with pytest.raises(SpecError, match="target"):
        compute_reward("hard", 0.8, 5.0, 0.0)
    with pytest.raises(SpecError, match="bad parameters"):
        compute_reward("hard", 0.8, 5.0, 10.0, w=1.0)


def test_is_infeasible_with_margin():
    assert not is_infeasible(10.0, 10.0, 0.0)
    assert is_infeasible(10.5, 10.0, 0.0)
    assert not is_infeasible(10.5, 10.0, 0.1)
    assert is_infeasible(11.5, 10.0, 0.1)
    assert not is_infeasible(float("nan"), 10.0, 0.1)
    assert not is_infeasible(None, 10.0, 0.1)
    with pytest.raises(SpecError):
        is_infeasible(5.0, 10.0, -0.5)
    assert math.isfinite(compute_reward("hard", 0.8, 1e-9, 10.0))
