"""Contract tests over every registered searcher, the dedup wrapper, the tabular loop and the Tune adapter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import numpy as np
import pandas as pd
import pytest
import torch

from search_spaces.errors import SpecError
from search_spaces.searchers import (
    Deduplicated,
    Screened,
    TableSpace,
    create_searcher,
    list_searchers,
    run_search,
)

torch.set_num_threads(1)

SEARCHERS = list_searchers()
# Every registered searcher behind the model-screening wrapper too: the same contract holds for them.
WRAPPED = [f"{name}+screened" for name in SEARCHERS]
# Small enough that the PPO controller updates and the reward models are used within a test.
FAST = {
    "ppo": {"batch_size": 5, "lr": 1e-2, "ppo_epochs": 2, "model_min_points": 5},
    "regularized_evolution": {"population_size": 8, "sample_size": 3},
    "tpe": {"n_startup_trials": 5},
    "gp": {"n_startup_trials": 5},
}
# GPSampler behind the screen (a GP screening a GP) takes 70-80 s in each of the two long tests, where
# the wrapper asks it hundreds of times on a 30-architecture space; the other contract tests cover it.
LONG_WRAPPED = [name for name in WRAPPED if name != "gp+screened"]
SCREEN = {"pool": 4, "min_points": 5, "refit_every": 5, "min_quality": -1.0}


class MaskedSpace:
    """Four positions with prefix-dependent masks; positions 1 and 2 are unordered (like a sum)."""

    sizes = (3, 4, 4, 2)

    def mask(self, position: int, prefix: Sequence[int]) -> np.ndarray:
        m = np.ones(self.sizes[position], dtype=bool)
        if position == 1:
            m[prefix[0] + 2 :] = False  # choice <= first token + 1
        elif position == 2:
            m[prefix[1]] = False  # differs from position 1
        elif position == 3 and prefix[0] != 0:
            m[1:] = False
        return m

    def canonical(self, tokens: Sequence[int]) -> str:
        a, b = sorted(tokens[1:3])
        return f"{tokens[0]}:{a},{b}:{tokens[3]}"

    def all_canonical(self) -> set[str]:
        out = set()
        for t0 in range(3):
            for t1 in np.flatnonzero(self.mask(1, [t0])):
                for t2 in np.flatnonzero(self.mask(2, [t0, t1])):
                    for t3 in np.flatnonzero(self.mask(3, [t0, t1, t2])):
                        out.add(self.canonical([t0, t1, t2, t3]))
        return out


def valid(space, tokens) -> bool:
    return len(tokens) == len(space.sizes) and all(space.mask(i, list(tokens[:i]))[t] for i, t in enumerate(tokens))


def toy_reward(tokens) -> float:
    return float(tokens[0] + tokens[1] - 0.5 * tokens[3])


def make(name, seed=0, space=None, **options):
    """A registered searcher by name, or one behind :class:`Screened` for ``<name>+screened``."""
    base = name.removesuffix("+screened")
    searcher = create_searcher(base, space or MaskedSpace(), seed=seed, **{**FAST.get(base, {}), **options})
    return Screened(searcher, **SCREEN) if name.endswith("+screened") else searcher


def drive(searcher, steps, outstanding=3, reward=toy_reward, rng_seed=0):
    """Propose/observe with a few proposals in flight, completing them in a seeded random order."""
    rng = np.random.default_rng(rng_seed)
    in_flight, seen = [], []
    for _ in range(steps):
        while len(in_flight) < outstanding:
            proposal = searcher.propose()
            if proposal is None:
                break
            in_flight.append(proposal)
            seen.append(proposal)
        if not in_flight:
            break
        proposal = in_flight.pop(int(rng.integers(len(in_flight))))
        searcher.observe(proposal.id, reward(proposal.tokens))
    return seen, in_flight


@pytest.mark.parametrize("name", SEARCHERS + WRAPPED)
def test_proposals_are_valid_under_masks(name):
    space = MaskedSpace()
    seen, _ = drive(make(name, space=space), 60)
    assert len(seen) >= 60
    assert all(valid(space, p.tokens) for p in seen)
    assert len({p.id for p in seen}) == len(seen)


@pytest.mark.parametrize("name", SEARCHERS + WRAPPED)
@pytest.mark.parametrize("dedupe", [False, True])
def test_save_restore_gives_the_same_next_proposals(name, dedupe):
    searcher = make(name, seed=1)
    searcher = Deduplicated(searcher) if dedupe else searcher
    _, in_flight = drive(searcher, 12)
    assert in_flight, "the state must include pending proposals"
    state = searcher.state_dict()

    other = make(name, seed=12345)
    other = Deduplicated(other) if dedupe else other
    other.load_state_dict(state)
    # The pending proposals survive: observing them works in the restored searcher.
    for p in in_flight:
        searcher.observe(p.id, toy_reward(p.tokens))
        other.observe(p.id, toy_reward(p.tokens))
    for _ in range(8):
        a, b = searcher.propose(), other.propose()
        assert a == b
        if a is None:
            break
        searcher.observe(a.id, toy_reward(a.tokens))
        other.observe(b.id, toy_reward(b.tokens))


@pytest.mark.parametrize("name", SEARCHERS + WRAPPED)
def test_failed_and_nan_rewards_are_a_penalty_not_a_crash(name):
    searcher = make(name)
    rewards = iter([None, float("nan"), 1.0, float("inf"), None, 2.0] * 10)
    seen, _ = drive(searcher, 40, reward=lambda tokens: next(rewards))
    assert len(seen) >= 40
    assert searcher.failure_reward() == 1.0  # the lowest real reward so far
    if name == "ppo":
        assert searcher.updates >= 3
        assert all(torch.isfinite(p).all() for p in searcher.policy.parameters())
    explicit = make(name, failure_reward=-5.0)
    p = explicit.propose()
    explicit.observe(p.id, None)
    assert explicit.failure_reward() == -5.0


@pytest.mark.parametrize("name", SEARCHERS + LONG_WRAPPED)
def test_duplicates_are_never_sent_to_the_trainer(name):
    space = MaskedSpace()
    everything = space.all_canonical()
    search = Deduplicated(make(name, space=space), max_retries=20)
    seen, in_flight = drive(search, len(everything) + 10, outstanding=3)
    keys = [space.canonical(p.tokens) for p in seen]
    assert len(keys) == len(set(keys)), "an architecture was proposed twice"
    assert set(keys) == everything  # the fallback keeps the search going until the space is exhausted
    assert not in_flight and search.propose() is None
    assert search.stats["cache_hits"] + search.stats["linked"] > 0
    # The inner searcher heard back about every proposal it made, duplicates included.
    assert not search.inner.pending
    assert search.inner.num_observed >= len(keys) - search.stats["explored"]


def test_a_duplicate_of_a_running_trial_gets_its_reward_when_it_arrives():
    space = MaskedSpace()
    search = Deduplicated(create_searcher("random", space, seed=3), max_retries=200)
    first = search.propose()
    others = [search.propose() for _ in range(5)]
    assert search.stats["linked"] > 0  # the tiny space makes random repeat the first one quickly
    search.observe(first.id, 1.0)
    for p in others:
        search.observe(p.id, 0.0)
    assert not search.inner.pending


def test_unknown_searcher_and_unknown_proposal_are_spec_errors():
    with pytest.raises(SpecError, match=", ".join(SEARCHERS)):
        create_searcher("hyperband", MaskedSpace())
    with pytest.raises(SpecError, match="bad options"):
        create_searcher("random", MaskedSpace(), learning_rate=3)
    with pytest.raises(SpecError, match="restart_after"):  # a bad value, not only a bad name
        create_searcher("ppo", MaskedSpace(), restart_after=0)
    searcher = create_searcher("random", MaskedSpace())
    with pytest.raises(SpecError, match="not pending"):
        searcher.observe("42", 1.0)
    with pytest.raises(SpecError, match="saved by 'random'"):
        create_searcher("tpe", MaskedSpace()).load_state_dict(searcher.state_dict())


class Flat:
    """Six positions of four free choices; every sequence is its own architecture."""

    sizes = (4,) * 6

    def mask(self, position, prefix):
        return np.ones(4, dtype=bool)

    def canonical(self, tokens):
        return ",".join(map(str, tokens))


def test_ppo_learns_a_simple_preference():
    """Reward = number of token-1s; after a few updates PPO proposes far more of them than chance."""
    # Without replacement the proposals must leave the learnt mode once its neighbourhood is used up,
    # so the policy's learning is read off proposals drawn with replacement; and of one controller, not
    # of the fresh one a restart starts once the optimum has been found and nothing better comes.
    options = {"lr": 1e-2, "batch_size": 10, "ppo_epochs": 4, "without_replacement": False, "restart_after": None}
    ppo = create_searcher("ppo", Flat(), seed=0, **options)
    seen, _ = drive(ppo, 200, outstanding=4, reward=lambda t: float(sum(x == 1 for x in t)))
    first = np.mean([sum(x == 1 for x in p.tokens) for p in seen[:10]])
    last = np.mean([sum(x == 1 for x in p.tokens) for p in seen[-50:]])
    assert first < 3.0 and last > 3.5, (first, last)


def test_ppo_risk_seeking_trains_only_the_best_share_of_a_batch():
    """With risk_epsilon=0.2 a batch of 10 contributes its 2 best samples, advantage = reward - quantile >= 0."""
    ppo = create_searcher("ppo", Flat(), seed=0, batch_size=10, risk_epsilon=0.2)
    drawn = ppo._sample(10)
    rewards = [float(r) for r in range(10)]
    ppo._track_rewards(np.array(rewards))
    kept = ppo._risk_seeking(list(zip(drawn, rewards, strict=True)))
    assert len(kept) == 2
    assert all(a >= 0 for _, a in kept)
    assert {id(d) for d, _ in kept} == {id(drawn[8]), id(drawn[9])}
    assert kept[1][1] > kept[0][1]


def test_ppo_elite_holds_the_best_architectures_seen_and_is_restored():
    ppo = create_searcher("ppo", Flat(), seed=0, batch_size=5, elite=4, sil_coef=1.0)
    seen, _ = drive(ppo, 40, outstanding=3, reward=lambda t: float(sum(t)))
    observed = sorted({float(sum(p.tokens)) for p in seen if p.id not in ppo.pending}, reverse=True)
    assert [r for _, r in ppo.elite] == sorted([r for _, r in ppo.elite], reverse=True)
    assert [r for _, r in ppo.elite][0] == observed[0]
    restored = create_searcher("ppo", Flat(), seed=0, batch_size=5, elite=4, sil_coef=1.0)
    restored.load_state_dict(ppo.state_dict())
    assert [(d.tokens.tolist(), r) for d, r in restored.elite] == [(d.tokens.tolist(), r) for d, r in ppo.elite]


def test_ppo_self_imitation_pulls_the_policy_towards_the_best_architecture_seen():
    """Same seed and data, SIL on vs off: the best architecture's log-probability rises more with SIL."""

    def logp_of_best(sil_coef: float) -> float:
        options = {"batch_size": 6, "ppo_epochs": 2, "lr": 1e-2, "advantage": "rank", "elite": 2}
        ppo = create_searcher("ppo", Flat(), seed=3, sil_coef=sil_coef, **options)
        seen, _ = drive(ppo, 12, outstanding=1, reward=lambda t: float(sum(t)))
        best = max(ppo.elite, key=lambda item: item[1])[0]
        with torch.no_grad():
            logp, _ = ppo.policy.evaluate(
                torch.from_numpy(best.tokens[None]), torch.from_numpy(best.masks[None]), 1.0, None
            )
        return float(logp.sum())

    assert logp_of_best(2.0) > logp_of_best(0.0) + 0.1


def test_ppo_samples_without_replacement_with_exact_behaviour_log_probs():
    """Eight sequences in the space: the first eight proposals are all different, each drawn from the
    policy restricted to what was not yet proposed, and its stored log-probability is that policy's."""

    class Tiny:
        sizes = (2, 2, 2)

        def mask(self, position, prefix):
            return np.ones(2, dtype=bool)

        def canonical(self, tokens):
            return ",".join(map(str, tokens))

    options = {"batch_size": 100, "sample_ahead": 1, "resample_passes": 1, "without_replacement": True}
    ppo = create_searcher("ppo", Tiny(), seed=0, **options)
    proposals = [ppo.propose() for _ in range(8)]
    assert len({p.tokens for p in proposals}) == 8
    last = ppo._drawn[proposals[-1].id]
    assert last.masks.sum() == 3  # the last sequence left: a single allowed choice at every position
    with torch.no_grad():
        logp, _ = ppo.policy.evaluate(
            torch.from_numpy(last.tokens[None]), torch.from_numpy(last.masks[None]), 1.0, None
        )
    assert float(logp.sum()) == pytest.approx(float(last.logp.sum()), abs=1e-5) and float(logp.sum()) == pytest.approx(
        0.0
    )


# -- tabular benchmark ---------------------------------------------------------------------------
OPS = ["none", "skip_connect", "nor_conv_1x1"]


def tiny_table(drop_every: int = 7) -> pd.DataFrame:
    """A NAS-Bench-201-shaped table over 3 ops, with some rows missing (a partial table)."""
    rng = np.random.default_rng(0)
    rows = []
    for i, ops in enumerate(np.ndindex(*(3,) * 6)):
        if i % drop_every == 3:
            continue
        e = [OPS[o] for o in ops]
        arch = f"|{e[0]}~0|+|{e[1]}~0|{e[2]}~1|+|{e[3]}~0|{e[4]}~1|{e[5]}~2|"
        convs = sum(o == 2 for o in ops)
        rows.append(
            {
                "arch": arch,
                "cifar10_test": 50 + 6 * convs + rng.normal(0, 1),
                "lat_cpu": 1.0 + convs + rng.uniform(0, 0.5),
                "lat_gpu": 0.5 + 0.3 * convs,
            }
        )
    return pd.DataFrame(rows)


def test_table_space_masks_only_existing_rows(tmp_path):
    frame = tiny_table()
    path = tmp_path / "tiny.csv.gz"
    frame.to_csv(path, index=False)
    table = TableSpace.from_csv(path)
    assert table.sizes == (3,) * 6 and table.devices == ["cpu", "gpu"]
    assert table.vocab[0] == sorted(OPS)
    rng = np.random.default_rng(0)
    from search_spaces.tokens import sample_uniform

    for _ in range(200):
        tokens = sample_uniform(table, rng)
        assert table.archs[table.row(tokens)] == table.canonical(tokens)
    with pytest.raises(Exception, match="not found"):
        TableSpace.from_csv(tmp_path / "missing.csv")
    with pytest.raises(Exception, match="no latency for device 'tpu'"):
        table.latency("tpu")


@pytest.mark.parametrize("name", SEARCHERS + LONG_WRAPPED)
def test_run_search_over_a_table_with_outstanding_proposals(name):
    table = TableSpace(tiny_table())
    trace = run_search(make(name, space=table), table, device="cpu", trials=60, outstanding=4, seed=1)
    assert len(trace.rows) == 60 == len(set(trace.rows))
    assert trace.target_ms == pytest.approx(np.median(table.latency("cpu")))
    best = trace.best_feasible()
    assert np.all(np.diff(best[~np.isnan(best)]) >= 0)
    assert all(math.isfinite(r) for r in trace.reward)


def test_nb201_table_loads_when_present():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared/data/nb201-latency/nb201_cifar10_latency.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    table = TableSpace.from_csv(path)
    assert table.sizes == (5,) * 6 and len(table.archs) == 15625
    assert set(table.devices) == {"titan_rtx_256", "gold_6226", "raspi4", "pixel3", "fpga", "eyeriss"}


# -- Ray Tune adapter ----------------------------------------------------------------------------
def test_tune_adapter_runs_a_tiny_experiment(ray_cluster, tmp_path):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from search_spaces.rewards import compute_reward
    from search_spaces.searchers.tune import TuneAdapter

    table = TableSpace(tiny_table())
    acc, lat = table.column("cifar10_test"), table.latency("cpu")
    target = float(np.median(lat))

    def trainable(config):
        row = config["row"]
        if config["tokens"][0] == 0:  # a third of the architectures crash: they must count as failed
            raise RuntimeError("simulated out-of-memory")
        tune.report(
            {
                "miou": acc[row],
                "latency_ms": lat[row],
                "reward": compute_reward("hard", acc[row], lat[row], target),
            }
        )

    adapter = TuneAdapter(
        create_searcher("ppo", table, seed=0, batch_size=4), to_config=lambda t: {"row": table.row(t)}
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(adapter, max_concurrent=2),
            num_samples=10,
            metric="reward",
            mode="max",
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 10
    rows = [r.config["row"] for r in results]
    assert len(set(rows)) == 10
    assert all(table.row(r.config["tokens"]) == r.config["row"] for r in results)
    ppo = adapter.inner.inner
    assert ppo.num_observed >= 10 and not ppo.pending and not adapter.trials
    assert ppo.updates >= 2

    # A crashed trial is observed as failed: cached as None, the searcher went on.
    crashed = [r for r in results if r.error]
    assert crashed and all(adapter.inner.cache[table.archs[r.config["row"]]] is None for r in crashed)
    assert all(adapter.inner.cache[table.archs[r.config["row"]]] is not None for r in results if not r.error)
    path = tmp_path / "searcher.pkl"
    adapter.save(str(path))
    restored = TuneAdapter(
        create_searcher("ppo", table, seed=99, batch_size=4), to_config=lambda t: {"row": table.row(t)}
    )
    restored.restore(str(path))
    assert restored.suggest("next") == adapter.suggest("next")
    assert list(tmp_path.glob(".searcher.pkl.*")) == []  # no temporary file left behind


def test_ppo_replay_pools_raw_rewards_of_the_last_batches_and_is_restored():
    """Replayed batches keep their rewards (advantages are recomputed over the pool at each update)."""
    options = {"batch_size": 4, "replay": 2}
    ppo = create_searcher("ppo", Flat(), seed=0, **options)
    drive(ppo, 20, outstanding=1, reward=lambda t: float(sum(t)))
    assert ppo.updates >= 3 and len(ppo.history) == 2
    for batch in ppo.history:
        assert len(batch) == 4
        assert all(r == float(d.tokens.sum()) for d, r in batch)  # the reward itself, not an advantage
    restored = create_searcher("ppo", Flat(), seed=99, **options)
    restored.load_state_dict(ppo.state_dict())
    for _ in range(6):
        a, b = ppo.propose(), restored.propose()
        assert a == b
        ppo.observe(a.id, float(sum(a.tokens)))
        restored.observe(b.id, float(sum(b.tokens)))


def test_ppo_factorised_controller_ignores_the_prefix_and_learns():
    ppo = create_searcher("ppo", Flat(), seed=0, controller="factorised", lr=0.1, batch_size=4)
    a, _ = ppo.policy.step(2, torch.tensor([0, 1]), None)
    assert torch.equal(a[0], a[1])  # the same logits whatever came before
    drive(ppo, 24, outstanding=1, reward=lambda t: float(sum(t)))
    assert ppo.updates >= 5 and ppo.policy.bias.abs().sum() > 0
    with pytest.raises(SpecError, match="controller"):
        create_searcher("ppo", Flat(), controller="transformer")


def additive(tokens) -> float:
    """A reward the Hamming-kernel model can learn: each position's choice adds its own amount."""
    weights = np.array([[0.0, 1.0, 0.3, -0.5], [0.2, -1.0, 0.8, 0.0], [0.5, 0.5, -0.7, 0.1]] * 2)
    return float(sum(weights[i, t] for i, t in enumerate(tokens)))


def test_reward_model_ranks_unseen_architectures_and_knows_where_it_has_not_looked():
    from search_spaces.searchers.surrogate import HammingGP

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4, size=(60, 6))
    rewards = np.array([additive(t) for t in tokens])
    model = HammingGP().fit(tokens, rewards)
    assert model.quality > 0.7, model.quality  # leave-one-out rank correlation
    held_out = rng.integers(0, 4, size=(200, 6))
    mean, std = model.predict(held_out)
    truth = np.array([additive(t) for t in held_out])
    assert np.corrcoef(mean, truth)[0, 1] > 0.7
    _, std_seen = model.predict(tokens[:5])
    assert std_seen.max() < np.median(std)  # less uncertain where it has data
    improvement = model.expected_improvement(held_out, float(rewards.max()))
    assert (improvement >= 0).all() and improvement.max() > 0


def test_hamming_distance_is_the_share_of_positions_that_differ():
    from search_spaces.searchers.surrogate import HammingGP

    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 5, size=(30, 6)), rng.integers(0, 5, size=(40, 6))
    distance = HammingGP()._distance(a, b)
    assert distance.shape == (30, 40)
    for i, j in [(0, 0), (3, 17), (29, 39)]:
        assert distance[i, j] == sum(int(x != y) for x, y in zip(a[i], b[j], strict=True)) / 6
    assert np.array_equal(np.diag(HammingGP()._distance(a, a)), np.zeros(30))


def space_masks(space, tokens, width):
    """The masks of a token sequence read off the space itself, padded to the controller's width."""
    masks = np.zeros((len(tokens), width), dtype=bool)
    for position in range(len(tokens)):
        allowed = space.mask(position, list(tokens[:position]))
        masks[position, : len(allowed)] = allowed
    return masks


@pytest.mark.parametrize("space", [Flat(), MaskedSpace()], ids=["flat", "masked"])
def test_ppo_stores_the_policys_log_probability_of_the_proposal_it_sent(space):
    """Every proposal, drawn by the policy or chosen from the pool by the model (neighbours the policy
    never drew included), stores as its behaviour log-probability what the policy at the moment it was
    sent gives those tokens, re-scored here with the controller under masks read off the space."""
    options = {"batch_size": 5, "ppo_epochs": 2, "model_min_points": 5, "model_min_quality": -1.0}
    ppo = create_searcher("ppo", space, seed=0, **options)
    reward = additive if isinstance(space, Flat) else toy_reward
    checked = from_pool = 0
    for _ in range(40):
        proposal = ppo.propose()
        if proposal is None:
            break
        pooled = ppo.model.ready()
        drawn = ppo._drawn[proposal.id]
        assert tuple(drawn.tokens.tolist()) == proposal.tokens
        tokens = torch.tensor([proposal.tokens])
        masks = torch.from_numpy(space_masks(space, proposal.tokens, ppo.width)[None])
        with torch.no_grad():
            logp, _ = ppo.policy.evaluate(tokens, masks, 1.0, None)
        assert np.allclose(drawn.logp, logp[0].numpy(), atol=1e-5)
        assert np.array_equal(drawn.masks, masks[0].numpy())
        checked, from_pool = checked + 1, from_pool + pooled
        ppo.observe(proposal.id, reward(proposal.tokens))
    assert checked >= 20 and from_pool >= 10 and ppo.updates >= 3


def test_ppo_proposes_the_best_of_its_pool_by_the_acquisition_and_restores_it():
    """With the model in use, the proposal maximises log EI + log P(feasible) + beta log pi over the pool
    (policy draws and one-edit neighbours of the best seen), and a restored searcher proposes the same."""
    options = {"batch_size": 5, "ppo_epochs": 2, "model_min_points": 10, "prior_weight": 0.5}
    ppo = create_searcher("ppo", Flat(), seed=0, **options)
    for _ in range(30):
        p = ppo.propose()
        ppo.observe(p.id, additive(p.tokens), constraint=p.tokens[0] - 1.5)  # token 0 above 1 breaks the target
    assert ppo.model.ready() and ppo.model.constraint_fit_at is not None, ppo.model.fit_at
    state = ppo.state_dict()
    rng_state = ppo.rng.bit_generator.state
    pool = ppo._pool()
    ppo.rng.bit_generator.state = rng_state
    proposal = ppo.propose()
    tokens = np.array([t for t, _ in pool.values()])
    _, logp = ppo.policy_log_probs(tokens)  # every candidate re-scored afresh: draws and neighbours alike
    score = ppo.model.log_acquisition(tokens) + 0.5 * logp.sum(1)
    assert proposal.tokens == tuple(tokens[int(np.argmax(score))])
    best = ppo.model.tokens[int(np.argmax(ppo.model.rewards))]
    unseen = {t for t in product(range(4), repeat=6) if sum(a != b for a, b in zip(t, best, strict=True)) == 1}
    unseen = {t for t in unseen if ",".join(map(str, t)) not in ppo.seen}
    assert unseen and unseen <= {t for t, _ in pool.values()}  # every unseen neighbour of the best is a candidate
    assert ppo._scored  # the neighbours' log-probabilities, kept for the next proposal under this policy

    restored = create_searcher("ppo", Flat(), seed=99, **options)
    restored.load_state_dict(state)
    assert restored.propose() == proposal


def hard_penalised(tokens) -> tuple[float, float, float]:
    """(reward, constraint, objective) of a latency-penalised search over ``Flat``: the objective is
    ``additive``, positions 0-2 choosing 2 or 3 cost latency, and the hard reward scales a slow
    architecture's objective down by ``target / latency``; accurate choices are the slow ones."""
    objective = additive(tokens) + 5.0  # positive, as accuracies are
    latency = 1.0 + sum(t >= 2 for t in tokens[:3]) * 0.6
    constraint = latency / 2.0 - 1.0
    return objective * min(1.0, 1.0 / (1.0 + constraint)), constraint, objective


def test_reward_model_fits_the_objective_apart_from_the_constraint():
    """Fed the objective, the reward GP models it (not the penalised reward) and EI's incumbent is the
    best feasible objective; a trial with no objective (pruned for latency before training) teaches only
    the constraint GP; with no objective at all the model fits rewards as before; the first objective to
    arrive after a fit on rewards switches the model to objectives, and a restored model is the same."""
    from search_spaces.searchers.acquisition import RewardModel

    rng = np.random.default_rng(3)
    tokens = [tuple(int(t) for t in row) for row in rng.integers(0, 4, size=(40, 6))]
    on_objective, on_reward = RewardModel(min_points=10), RewardModel(min_points=10)
    for t in tokens:
        reward, constraint, objective = hard_penalised(t)
        on_objective.add(t, reward, constraint, objective)
        on_reward.add(t, reward, constraint)
    pruned = (3, 3, 3, 0, 0, 0)
    on_objective.add(pruned, 0.0, hard_penalised(pruned)[1])  # over the target: never trained
    on_objective.refit(), on_reward.refit()
    assert on_objective.on_objective and not on_reward.on_objective
    reward_gp, constraint_gp = on_objective._models()
    assert len(reward_gp.x) == 40 and len(constraint_gp.x) == 41
    assert len(on_reward._models()[0].x) == 40
    feasible = [hard_penalised(t) for t in tokens if hard_penalised(t)[1] <= 0]
    assert on_objective.best_feasible() == pytest.approx(max(o for _, _, o in feasible))
    assert on_reward.best_feasible() == pytest.approx(max(r for r, _, _ in feasible))
    held_out = rng.integers(0, 4, size=(300, 6))
    truth = np.array([hard_penalised(t)[2] for t in held_out])
    from search_spaces.searchers.surrogate import spearman

    rank = {name: spearman(m._models()[0].predict(held_out)[0], truth)
            for name, m in (("objective", on_objective), ("reward", on_reward))}
    assert rank["objective"] > 0.8 and rank["objective"] > rank["reward"] + 0.1, rank

    restored = RewardModel(min_points=10)
    restored.load(on_objective.state())
    assert np.allclose(restored._models()[0].predict(held_out)[0], reward_gp.predict(held_out)[0])

    late = RewardModel(min_points=10)
    for t in tokens[:20]:
        late.add(t, hard_penalised(t)[0], hard_penalised(t)[1])
    late.refit()
    assert late.fit_at is not None and not late.on_objective  # no objective yet: fitted on rewards
    late.add(tokens[20], *hard_penalised(tokens[20]))  # one objective: too few to fit on objectives yet
    assert late.on_objective and late.fit_at is None and not late.ready()
    for t in tokens[21:32]:
        late.add(t, *hard_penalised(t))
    late.refit()
    assert late.fit_at is not None and len(late._models()[0].x) == 12


def test_searchers_pass_the_objective_on_and_duplicates_are_answered_with_it():
    """The objective reaches PPO's model through the dedup wrapper, a cached duplicate included; a failed
    trial's objective is dropped; searchers without a model accept it and ignore it."""
    ppo = Deduplicated(create_searcher("ppo", Flat(), seed=0, model_min_points=5))
    first = ppo.propose()
    reward, constraint, objective = hard_penalised(first.tokens)
    ppo.observe(first.id, reward, constraint, objective)
    assert ppo.objectives[ppo.space.canonical(first.tokens)] == objective
    assert ppo.inner.model.objectives == [objective]
    second = ppo.propose()
    ppo.observe(second.id, None, None, 0.7)  # failed: no objective
    assert ppo.inner.model.objectives[-1] is None
    for name in SEARCHERS + WRAPPED:
        searcher = Deduplicated(make(name))
        p = searcher.propose()
        searcher.observe(p.id, *hard_penalised(p.tokens))


def test_incremental_reward_model_equals_a_fresh_fit():
    """One Cholesky row per observation gives the posterior a factorisation from scratch gives."""
    from search_spaces.searchers.surrogate import HammingGP

    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 4, size=(80, 6))
    rewards = np.array([additive(t) for t in tokens])
    grown = HammingGP().fit(tokens[:50], rewards[:50])
    for t, r in zip(tokens[50:], rewards[50:], strict=True):
        grown.extend(t, r)
    fresh = HammingGP().fit(tokens, rewards, grown.theta, grown.noise)
    query = rng.integers(0, 4, size=(40, 6))
    for a, b in zip(grown.predict(query), fresh.predict(query), strict=True):
        assert np.allclose(a, b, atol=1e-8)


def test_screened_tells_the_inner_searcher_which_candidate_was_sent():
    """Behind the wrapper TPE is asked for ``pool`` candidates per trial once the model is used; the
    ones not sent are withdrawn (failed trials to Optuna, learnt from by nobody), the sent one gets
    its reward, and nothing is left pending."""
    import optuna

    inner = create_searcher("tpe", Flat(), seed=0, n_startup_trials=5)
    search = Screened(inner, pool=4, min_points=5, refit_every=5, min_quality=-1.0)
    sent = []
    for _ in range(30):
        p = search.propose()
        sent.append(p)
        search.observe(p.id, additive(p.tokens))
    assert search.model.ready() and not search.inner.pending and not search._inner_ids
    trials = search.inner.study.trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    withdrawn = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(complete) == 30 and len(withdrawn) == 3 * (30 - 5)
    assert [tuple(t.params[f"t{i}"] for i in range(6)) for t in complete] == [p.tokens for p in sent]
    assert [t.value for t in complete] == pytest.approx([additive(p.tokens) for p in sent])


def test_gp_searcher_gets_the_latency_constraint_of_each_trial():
    """Optuna's GPSampler sees each result's latency constraint (``<= 0``: meets the target)."""
    gp = make("gp", space=Flat())
    for _ in range(12):
        p = gp.propose()
        gp.observe(p.id, additive(p.tokens), constraint=p.tokens[0] - 1.5)
    complete = gp.study.trials
    assert len(complete) == 12
    for trial in complete:
        assert trial.constraints == {"latency": trial.params["t0"] - 1.5}
    table = TableSpace(tiny_table())
    trace = run_search(make("gp", space=table), table, device="cpu", trials=12, seed=0)
    assert len(trace.rows) == 12


def test_ppo_without_a_reward_model_is_plain_ppo():
    ppo = create_searcher("ppo", Flat(), seed=0, batch_size=5, pool_draws=0)
    drive(ppo, 30, outstanding=1, reward=additive)
    assert ppo.model.fit_at is None and not ppo.model.ready() and len(ppo.model) == 30


def test_ppo_restarts_a_stalled_controller_but_keeps_what_it_learnt():
    """After ``restart_after`` architectures without a better reward, the controller starts afresh; the
    reward model keeps every observation, nothing proposed is proposed again, and the state restores."""
    options = {"batch_size": 5, "ppo_epochs": 2, "restart_after": 8, "model_min_points": 5, "restart_model": False}
    ppo = create_searcher("ppo", Flat(), seed=0, **options)
    first = drive(ppo, 1, outstanding=1, reward=lambda t: 1.0)[0][0]
    weights = [p.detach().clone() for p in ppo.policy.parameters()]
    seen, _ = drive(ppo, 20, outstanding=1, reward=lambda t: 0.0)  # never better than the first
    assert ppo.restarts == 2 and ppo.since_best == 4  # restarted at the 8th and the 16th stalled observation
    assert any(not torch.equal(w, p) for w, p in zip(weights, ppo.policy.parameters(), strict=True))
    assert len(ppo.model) == 21 and ppo.model.fit_at is not None  # the model still has every architecture
    assert len({p.tokens for p in [first, *seen]}) == 21
    state = ppo.state_dict()
    restored = create_searcher("ppo", Flat(), seed=7, **options)
    restored.load_state_dict(state)
    assert restored.restarts == 2 and restored.propose() == ppo.propose()


def test_every_searcher_declares_its_options_and_the_api_checks_the_same_model():
    from typing import get_args

    from search_spaces.searchers.options import OPTIONS
    from service.specs import SearcherSpec

    names = get_args(SearcherSpec.model_fields["name"].annotation)
    assert sorted(names) == sorted(OPTIONS) == list_searchers()
    for name in names:
        assert create_searcher(name, MaskedSpace(), seed=0).options_model is OPTIONS[name]


def test_a_searcher_whose_arguments_drift_from_its_options_model_does_not_register():
    from search_spaces.searchers import Searcher, register_searcher
    from search_spaces.searchers.options import EvolutionOptions

    class Drifted(Searcher):
        def __init__(self, space, seed=None, *, population_size: int = 49, sample_size: int = 10):
            super().__init__(space, seed)

    with pytest.raises(TypeError, match="population_size=49"):
        register_searcher("drifted", options=EvolutionOptions)(Drifted)
    with pytest.raises(TypeError, match="the API checks"):  # "tpe" is in the options table with another model
        register_searcher("tpe", options=EvolutionOptions)(Drifted)


def test_surrogate_rank_correlation_shares_ranks_between_ties():
    """Failed trials all score the same reward: tied values take their mean rank, not an arbitrary order."""
    from search_spaces.searchers.surrogate import spearman

    assert spearman(np.array([0.0, 0.0, 0.0, 1.0]), np.array([-1.0, -1.0, -1.0, 2.0])) == pytest.approx(1.0)
    assert spearman(np.ones(4), np.arange(4.0)) == 0.0


def test_ppo_explore_sends_plain_policy_draws_while_the_model_is_ready_and_restores():
    """``explore=1``: with the model ready no proposal comes from the pool; each is a draw of the policy
    whose stored log-probability is the controller's re-score. ``explore`` between 0 and 1 mixes the two
    with the searcher's seeded RNG, so a restored searcher continues identically."""
    options = {"batch_size": 5, "ppo_epochs": 2, "model_min_points": 5, "model_min_quality": -1.0}
    ppo = create_searcher("ppo", Flat(), seed=0, explore=1.0, **options)

    def no_pool():
        raise AssertionError("explore=1 must not choose from the pool")

    ppo._pool = no_pool
    ready = 0
    for _ in range(30):
        proposal = ppo.propose()
        drawn = ppo._drawn[proposal.id]
        masks = torch.from_numpy(space_masks(Flat(), proposal.tokens, ppo.width)[None])
        with torch.no_grad():
            logp, _ = ppo.policy.evaluate(torch.tensor([proposal.tokens]), masks, 1.0, None)
        assert np.allclose(drawn.logp, logp[0].numpy(), atol=1e-5)
        ready += ppo.model.ready()
        ppo.observe(proposal.id, additive(proposal.tokens))
    assert ready >= 20 and ppo.updates >= 5

    mixed = {**options, "explore": 0.5, "pool_random": 8}
    ppo = create_searcher("ppo", Flat(), seed=3, **mixed)
    calls = []
    pool = ppo._pool
    ppo._pool = lambda: calls.append(1) or pool()
    drive(ppo, 20, outstanding=1, reward=additive)
    state = ppo.state_dict()
    restored = create_searcher("ppo", Flat(), seed=7, **mixed)
    restored.load_state_dict(state)
    for _ in range(15):
        a, b = ppo.propose(), restored.propose()
        assert a == b
        ppo.observe(a.id, additive(a.tokens))
        restored.observe(b.id, additive(b.tokens))
    assert 5 <= len(calls) <= 25  # about half of the proposals made with the model ready


def test_ppo_pool_random_adds_uniform_candidates_and_pool_options_are_checked():
    options = {"batch_size": 5, "ppo_epochs": 2, "model_min_points": 5, "model_min_quality": -1.0}
    ppo = create_searcher("ppo", Flat(), seed=0, pool_draws=1, pool_neighbours=0, pool_random=30, **options)
    drive(ppo, 12, outstanding=1, reward=additive)
    assert len(ppo._pool()) >= 25  # one policy draw plus (almost surely distinct) uniform architectures
    for bad in ({"explore": 1.5}, {"explore": -0.1}, {"pool_random": -1}):
        with pytest.raises(SpecError, match=next(iter(bad))):
            create_searcher("ppo", Flat(), **bad)
    from search_spaces.searchers.ppo import PPOSearcher

    with pytest.raises(ValueError, match="explore must be a share"):
        PPOSearcher(Flat(), explore=2.0)
    with pytest.raises(ValueError, match="pool_random"):
        PPOSearcher(Flat(), pool_random=-3)


def test_ppo_pool_two_edit_adds_every_unseen_two_edit_neighbour_of_the_best():
    options = {"batch_size": 5, "ppo_epochs": 2, "model_min_points": 5, "model_min_quality": -1.0}
    ppo = create_searcher("ppo", Flat(), seed=0, pool_draws=1, pool_neighbours=0, pool_two_edit=1, **options)
    drive(ppo, 12, outstanding=1, reward=additive)
    pool = {t for t, _ in ppo._pool().values()}
    best = ppo.model.tokens[int(np.argmax(ppo.model.rewards))]
    two = {t for t in product(range(4), repeat=6) if sum(a != b for a, b in zip(t, best, strict=True)) in (1, 2)}
    two = {t for t in two if ",".join(map(str, t)) not in ppo.seen}
    assert len(two) > 100 and two <= pool  # one and two changes from the best, all of them
    assert len(pool - two) <= 1  # and the one policy draw
    with pytest.raises(SpecError, match="pool_two_edit"):
        create_searcher("ppo", Flat(), pool_two_edit=-1)


def test_ppo_restart_model_starts_the_reward_model_afresh_at_a_restart_and_restores():
    """``restart_model``: at a controller restart the reward model forgets the stalled basin and holds
    only what was observed since; nothing proposed is proposed again, and a restored searcher agrees."""
    options = {"batch_size": 5, "ppo_epochs": 2, "restart_after": 8, "model_min_points": 5, "restart_model": True}
    ppo = create_searcher("ppo", Flat(), seed=0, **options)
    first = drive(ppo, 1, outstanding=1, reward=lambda t: 1.0)[0][0]
    seen, _ = drive(ppo, 20, outstanding=1, reward=lambda t: 0.0)
    assert ppo.restarts == 2 and ppo.since_best == 4
    assert len(ppo.model) == 4  # the four observed after the second restart
    assert len({p.tokens for p in [first, *seen]}) == 21
    restored = create_searcher("ppo", Flat(), seed=7, **options)
    restored.load_state_dict(ppo.state_dict())
    assert len(restored.model) == 4 and restored.propose() == ppo.propose()


def test_ei_xi_raises_the_incumbent_of_the_pool_acquisition():
    from search_spaces.searchers.surrogate import log_expected_improvement

    options = {"batch_size": 5, "ppo_epochs": 2, "model_min_points": 5, "model_min_quality": -1.0, "ei_xi": 0.3}
    ppo = create_searcher("ppo", Flat(), seed=0, **options)
    drive(ppo, 15, outstanding=1, reward=additive)
    tokens = np.array([t for t, _ in ppo._pool().values()])
    reward_gp, _ = ppo.model._models()
    mean, std = reward_gp.predict(tokens)
    expected = log_expected_improvement(mean, std, ppo.model.best_feasible() + 0.3)
    assert np.allclose(ppo.model.log_acquisition(tokens, 0.3), expected)
    assert not np.allclose(ppo.model.log_acquisition(tokens), expected)
    with pytest.raises(SpecError, match="ei_xi"):
        create_searcher("ppo", Flat(), ei_xi=-1.0)
