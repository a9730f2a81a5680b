"""`geonas demo`'s spec is the product in small, and its target is set from this machine."""

from __future__ import annotations

import copy

from search_spaces.latency.cache import LatencyCache
from service.demo import DEMO_SPEC, demo_target_ms
from service.specs import ExperimentSpec
from trainers.demo_data import write_demo_dataset


def test_the_demo_runs_ppo_under_a_hard_target_and_fine_tunes_the_top_two_and_a_unet(tmp_path):
    spec = copy.deepcopy(DEMO_SPEC)
    spec["dataset"]["path"] = str(tmp_path)
    spec["latency"]["target_ms"] = 5.0
    parsed = ExperimentSpec.model_validate(spec)
    assert parsed.searcher.name == "ppo" and parsed.latency.reward == "hard"
    assert parsed.stage2.top_k == 2 and parsed.baselines == ["unet"]
    # latency varies in the space: cell count and width are searched, not fixed
    assert len(parsed.search_space.num_cells) > 1 and len(parsed.search_space.channels) > 1
    # PPO learns during the demo: its batch fills at least twice within the budget
    assert parsed.budget.trials >= 2 * parsed.searcher.options["batch_size"]


def test_the_demo_target_is_the_median_of_architectures_measured_like_the_meter_does(tmp_path):
    data = write_demo_dataset(tmp_path / "data", chips={"train": 4, "val": 2, "test": 2}, size=32, seed=0)
    spec = copy.deepcopy(DEMO_SPEC)
    spec["dataset"]["path"] = str(data)
    cache_path = tmp_path / "latency-cache.sqlite"
    target = demo_target_ms(spec, data, cache_path, sample=3)
    measured = sorted(result.median_ms for _, result in LatencyCache(cache_path).entries())
    assert len(measured) == 3  # cached under the meter's keys: a proposal among them is not measured again
    assert target == round(measured[1], 2)
