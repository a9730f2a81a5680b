"""`geonas demo`'s spec is the product in small."""

from __future__ import annotations

import copy

from service.demo import DEMO_SPEC
from service.specs import ExperimentSpec


def test_the_demo_runs_ppo_under_a_hard_target_and_fine_tunes_the_top_two_and_a_unet(tmp_path):
    spec = copy.deepcopy(DEMO_SPEC)
    spec["dataset"]["path"] = str(tmp_path)
    parsed = ExperimentSpec.model_validate(spec)
    assert parsed.searcher.name == "ppo" and parsed.latency.reward == "hard"
    # a target that binds on any machine: the median latency of draws of the searched space, measured
    # by the experiment's meter when it starts (about half of the first proposals are over it)
    assert parsed.latency.target_ms is None and parsed.latency.target_ratio == 1.0
    assert parsed.latency.relative_to == "space" and parsed.baselines == ["unet"]
    assert parsed.stage2.top_k == 2
    # latency varies in the space: cell count and width are searched, not fixed
    assert len(parsed.search_space.num_cells) > 1 and len(parsed.search_space.channels) > 1
    # PPO learns during the demo: its batch fills at least twice within the budget
    assert parsed.budget.trials >= 2 * parsed.searcher.options["batch_size"]
