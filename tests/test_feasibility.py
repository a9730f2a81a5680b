"""One feasibility rule, from pruning to the leaderboard, and early stopping on what the searcher optimises.

A hard target T with margin m is met when ``lat <= T·(1+m)``: stage 1 prunes by it, stage 2 picks
its candidates by it, the fine-tuned model's fresh measurement is checked by it, and the leaderboard
says which rows keep it. ASHA ranks trials by the reward and never sees a pruned trial.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from search_spaces.feasibility import is_infeasible, latency_constraint, recheck, target_flags, within_target
from service.app import create_app
from service.driver import early_stopping, stage2_candidates
from service.settings import Settings
from service.specs import ExperimentSpec
from service.states import State


def test_one_rule_with_the_margin_as_a_declared_tolerance():
    assert within_target(12.0, 12.0, 0.0) and not within_target(12.01, 12.0, 0.0)
    assert within_target(13.2, 12.0, 0.1) and not within_target(13.21, 12.0, 0.1)
    assert not within_target(None, 12.0) and not within_target(float("nan"), 12.0)
    # pruning is the same rule's negation (a missing latency trains, it is not pruned)
    for lat in (11.0, 12.19, 12.36, 13.2, 13.3):
        assert is_infeasible(lat, 12.0, 0.1) == (not within_target(lat, 12.0, 0.1))
    assert not is_infeasible(None, 12.0, 0.1)



def test_searchers_hear_the_same_rule_as_a_constraint_and_any_searcher_can_be_screened(tmp_path):
    """``lat / (T (1 + m)) - 1 <= 0`` exactly when the rule keeps the latency; the experiment's searcher
    adapter reads it from each trial's result when the spec sets a target, and not otherwise."""
    from search_spaces.nasfpn import NasFpnSpace
    from search_spaces.searchers.tune import TuneAdapter
    from trainers.search import searcher_adapter

    for lat in (11.0, 12.0, 12.19, 13.2, 13.21, 30.0):
        assert (latency_constraint(lat, 12.0, 0.1) <= 0) == within_target(lat, 12.0, 0.1)
    assert latency_constraint(None, 12.0) is None and latency_constraint(float("inf"), 12.0) is None
    space = NasFpnSpace(ExperimentSpec.model_validate(
        {"name": "c", "dataset": {"path": "/data/x"}}).search_space.model_dump())
    adapter, _ = searcher_adapter(space, "random", 0, {}, tmp_path / "none.pkl", target_ms=12.0, margin=0.1)
    assert isinstance(adapter, TuneAdapter)
    assert adapter.constraint_fn({"latency_ms": 6.6}) == pytest.approx(-0.5)
    assert adapter.constraint_fn({"miou": 0.5}) is None
    # the objective the reward was computed from, which reward models fit apart from the constraint
    assert adapter.objective_fn({"miou": 0.5, "reward": 0.4}) == 0.5
    assert adapter.objective_fn({"miou": None, "reward": 0.0}) is None  # pruned before training
    assert searcher_adapter(space, "random", 0, {}, tmp_path / "none.pkl")[0].constraint_fn is None
    spec = ExperimentSpec.model_validate(
        {"name": "s", "dataset": {"path": "/data/x"}, "searcher": {"name": "tpe", "screen": 16}})
    screened, _ = searcher_adapter(space, spec.searcher.name, 0, spec.searcher.options, tmp_path / "none.pkl",
                                   target_ms=12.0, screen=spec.searcher.screen)
    assert screened.inner.name == "tpe+screened" and screened.inner.inner.pool == 16

def test_the_fresh_measurement_is_checked_by_the_rule_and_against_stage_one():
    # the run: stage 1 kept 12.36 ms under T = 12, m = 0.1; stage 2 measured 14.05 ms
    check = recheck(12.36, 14.05, 12.0, 0.1, tolerance=0.15)
    assert check.meets_target is False and check.agrees is True and check.flags == ["over_target"]
    assert check.limit_ms == pytest.approx(13.2) and check.rel_diff == pytest.approx(14.05 / 12.36 - 1)
    far = recheck(8.0, 12.5, 12.0, 0.1, tolerance=0.15)
    assert far.meets_target is True and far.flags == ["latency_disagrees"]
    no_target = recheck(10.0, 10.5, None, 0.1, 0.15)
    assert no_target.flags == [] and no_target.meets_target is None


def _trial(name, reward, latency, kind="searched", state=State.COMPLETED):
    return SimpleNamespace(stage=1, state=state, reward=reward, latency_ms=latency, kind=kind, arch_hash=name)


def test_stage_two_takes_every_trial_stage_one_kept():
    spec = ExperimentSpec.model_validate(
        {
            "name": "x",
            "dataset": {"path": "/tmp"},
            "latency": {"target_ms": 12.0, "reward": "hard", "margin": 0.1},
            "stage2": {"top_k": 2},
        }
    )
    trials = [_trial("a", 0.80, 12.19), _trial("b", 0.79, 12.36), _trial("c", 0.70, 11.35), _trial("d", 0.9, 13.5)]
    # before, stage 2 took only c (<= 12 ms) although stage 1 kept a and b (<= 13.2 ms)
    assert [t.arch_hash for t in stage2_candidates(spec, trials)] == ["a", "b"]
    strict = spec.model_copy(update={"latency": spec.latency.model_copy(update={"margin": 0.0})})
    assert [t.arch_hash for t in stage2_candidates(strict, trials)] == ["c"]


def test_asha_ranks_by_the_reward_unless_told_otherwise():
    base = {"name": "x", "dataset": {"path": "/tmp"}, "stage1": {"epochs": 3}}
    assert early_stopping(ExperimentSpec.model_validate(base)).metric == "reward"
    base["stage1"]["early_stopping_metric"] = "miou"
    assert early_stopping(ExperimentSpec.model_validate(base)).metric == "miou"


def test_asha_never_records_a_pruned_trial():
    from ray.tune.experiment import Trial

    from trainers.early_stopping import make_scheduler

    scheduler = make_scheduler("asha", "reward", epochs=4, grace_period=1, reduction_factor=2)
    scheduler.set_search_properties(None, None)
    trials = [Trial("geonas_test", trial_id=f"t{i}", stub=True) for i in range(3)]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    pruned = {"training_iteration": 1, "epoch": 0, "miou": None, "reward": 0.0, "pruned": True}
    scheduler.on_trial_result(None, trials[0], pruned)
    scheduler.on_trial_complete(None, trials[0], pruned)
    for trial, reward in zip(trials[1:], (0.4, 0.6), strict=True):
        scheduler.on_trial_result(None, trial, {"training_iteration": 1, "miou": reward + 0.1, "reward": reward})
    recorded = {
        trial_id: value
        for bracket in scheduler._brackets
        for _milestone, rung in bracket._rungs
        for trial_id, value in rung.items()
    }
    # the pruned trial is in no rung; the others are ranked by their reward, not their mIoU
    assert recorded == {"t1": pytest.approx(0.4), "t2": pytest.approx(0.6)}


@pytest.fixture()
def client(tmp_path):
    app = create_app(Settings(home=tmp_path / "home"))
    with TestClient(app) as c:
        c.store = app.state.store
        yield c


def test_the_leaderboard_says_which_rows_meet_their_target(client):
    store = client.store
    spec = {"latency": {"target_ms": 12.0, "margin": 0.1, "reward": "hard"}}
    exp = store.create_experiment("lb", spec)
    free = store.create_experiment("free", {"latency": {"target_ms": None}})
    check = recheck(12.36, 14.05, 12.0, 0.1, 0.15).to_dict()
    rows = {
        (exp.id, "kept"): (0.8, 12.19, None),
        (exp.id, "broke"): (0.7, 14.05, check),  # registered after a fresh re-measurement broke the target
        (free.id, "any"): (0.6, 40.0, None),
    }
    for (exp_id, name), (miou, lat, chk) in rows.items():
        trial_id = f"{exp_id}-{name}"
        store.record_trial(trial_id, exp_id, state=State.RUNNING, arch_hash=name, arch={})
        history = {"epoch": 1, "miou": miou, "latency_check": chk} if chk else None
        store.record_trial(
            trial_id, exp_id, state=State.COMPLETED, miou=miou, latency_ms=lat, history_entry=history, epoch=1
        )
    board = {r["arch_hash"]: r for r in client.get("/v1/leaderboard").json()["rows"]}
    assert (board["kept"]["meets_target"], board["kept"]["flags"]) == (True, [])
    assert (board["broke"]["meets_target"], board["broke"]["flags"]) == (False, ["over_target"])
    assert (board["any"]["meets_target"], board["any"]["flags"]) == (None, [])
    assert target_flags(9.0, 12.0, 0.1, {"agrees": False}) == (True, ["latency_disagrees"])


def test_a_flagged_model_says_so_on_the_api_and_the_experiment_page(client):
    store = client.store
    exp = store.create_experiment("flagged", {"latency": {"target_ms": 12.0, "margin": 0.1, "reward": "hard"}})
    check = recheck(12.36, 14.05, 12.0, 0.1, 0.15).to_dict()
    model = store.register_model(
        exp.id, trial_id=f"{exp.id}-s2-a", kind="searched", arch_hash="a", descriptor={}, miou=0.7,
        latency_ms=14.05, latency_device="cpu-1threads", metrics={"latency_check": check},
        training={"init": "stage1"},
    )  # fmt: skip
    public = client.get(f"/v1/models/{model.id}").json()
    assert public["metrics"]["latency_check"]["flags"] == ["over_target"] and public["training"]["init"] == "stage1"
    summary = client.get(f"/ui/experiments/{exp.id}/summary").json()
    assert [m["flags"] for m in summary["models"]] == [["over_target"]]
