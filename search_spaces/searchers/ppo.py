"""PPO over an autoregressive LSTM controller, choosing each trial from a pool with a reward model.

What the searcher is: a policy-gradient controller (an LSTM that emits one masked softmax per token
position, so any :class:`TokenSpace`'s masks hold exactly) trained with clipped PPO on real rewards
only, and used as the prior of a model-based acquisition. Until a Gaussian-process reward model ranks
held-out architectures well (leave-one-out Spearman >= ``model_min_quality``) a proposal is a draw of
the policy; afterwards it is the best of a pool (``pool_draws`` policy draws plus the one-edit
neighbours of the ``pool_neighbours`` best architectures seen) by ``log EI + log P(feasible) +
prior_weight * log pi`` (``ppo_pool.py``): EI of the objective the trials report (accuracy, mIoU)
and the feasibility of the latency constraint, each modelled apart, as constrained BO does. Every
proposal stores its log-probability under the policy at the moment it was sent, computed for the
tokens actually sent, so PPO's importance ratio ``pi_new / pi_old`` is taken to that policy for
drawn and model-chosen proposals alike, and stale proposals (sent before an update, finished
after it) enter through the same ratio. Self-imitation of the elite, risk-seeking advantages and
restarts of a stalled controller shape what the policy learns; the model shapes only what is tried.

Defaults come from the NAS-Bench-201 latency table (``bench/searchers.py``; earlier variants are in
``bench/results/history/searchers_ppo_*.json``): small batches (10), Adam lr 1e-2, 4 epochs, the best
30 % of a batch trained on (risk-seeking), self-imitation of the 10 best, a fresh controller after 100
architectures without a better reward, and a light prior in the pool's score (``prior_weight`` 0.1). At
1.0 the prior kept good neighbours out: on eyeriss, seed 2, a target architecture one edit from the best
seen, never drawn by the policy, was in every pool from the 48th proposal to the 194th, ranked about
100th of 165 because its ``log pi`` lay 7-10 nats below the top's; at 0 the search missed the target in
3 of 10 seeds on raspi4. ``pool_draws=0`` turns the model off (plain PPO). Training the
controller on the model's imagined rewards (Dyna-style) collapsed it early
(``history/searchers_ppo_dyna_h100-2026-11-26.json``), so the model decides what is tried, never what is
learnt. NAS-FPN's own settings (batch ~20, lr ~1e-4, a moving-average baseline) remain options.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from search_spaces.searchers.acquisition import RewardModel
from search_spaces.searchers.base import Proposal, Searcher, register_searcher
from search_spaces.searchers.controller import Controller, Drawn, masked_log_softmax, stack_samples
from search_spaces.searchers.options import PPOOptions
from search_spaces.searchers.ppo_pool import PoolAcquisition, check_pool_options
from search_spaces.tokens import TokenSpace

__all__ = ["PPOSearcher", "Controller"]


_Drawn = Drawn  # searcher states saved before the policy moved to controller.py pickle it under this name


@register_searcher("ppo", options=PPOOptions)
class PPOSearcher(PoolAcquisition, Searcher):
    """Autoregressive LSTM controller trained with clipped PPO; every hyper-parameter is an option.

    Options: ``controller`` (``"lstm"``; ``"factorised"``: one softmax per position with no
    conditioning, an ablation), ``hidden`` (64), ``embed`` (32), ``lr`` (Adam), ``batch_size`` (rewards per update),
    ``ppo_epochs``, ``clip`` (0.2), ``entropy_coef`` and ``entropy_decay`` (multiplied in after each
    update), ``advantage`` (``"rank"``: centred ranks within the batch; ``"zscore"``: batch z-scores;
    ``"baseline"``: reward minus a moving-average baseline with decay ``baseline_decay``, divided by a
    running std), ``replay`` (how many earlier batches join each update: advantages, and the risk quantile, are
    computed over the new batch and those together, and each sample is re-weighted by its importance ratio),
    ``temperature``, ``logit_clip`` (tanh clipping of logits, as in ENAS/NAS-FPN; None = off),
    ``max_grad_norm``, ``max_pending`` (propose returns None when this many are outstanding; None = never),
    ``risk_epsilon`` (risk-seeking policy gradient, Petersen et al. 2021: only the best ``risk_epsilon``
    share of a batch is trained on, with advantage = reward minus the batch's (1 - epsilon) quantile, so
    the policy chases the best architectures rather than the average; default 0.3, None = off), ``elite`` and
    ``sil_coef`` (self-imitation, Oh et al. 2018: the ``elite`` best architectures seen so far are
    replayed every update with the off-policy loss ``-log pi * max(R - V, 0)``, V the moving-average
    baseline; 0 = off),
    ``sample_ahead`` (sequences drawn per batched pass of the controller), ``grow_refill`` (each further
    pass within one proposal draws twice as many), ``resample_passes`` (how many batched passes may be
    spent skipping architectures already proposed), ``without_replacement``
    (True: choices whose every continuation was already proposed are masked out while sampling, and the
    stored masks and log-probabilities are those of that restricted policy, so the importance ratios stay
    exact), ``restart_after`` (a fresh controller after this many new architectures without a better
    reward; 100; None = never: see ``_restart``), ``pool_draws`` (policy draws in each proposal's pool;
    0 = no model, plain PPO), ``pool_neighbours`` (the best architectures seen whose one-edit
    neighbours join the pool), ``pool_two_edit`` (those whose two-edit neighbours join it too), ``prior_weight``
    (beta on ``log pi`` in the score), ``explore``, ``pool_random``,
    ``ei_xi`` and ``restart_model`` (see ``ppo_pool.py``), ``model_min_points`` (architectures observed
    before the model is fitted) and ``model_min_quality`` (the leave-one-out Spearman below which it is not used).
    """

    def __init__(
        self,
        space: TokenSpace,
        seed: int | None = None,
        *,
        hidden: int = 64,
        embed: int = 32,
        controller: Literal["lstm", "factorised"] = "lstm",
        lr: float = 1e-2,
        batch_size: int = 10,
        ppo_epochs: int = 4,
        clip: float = 0.2,
        entropy_coef: float = 1e-3,
        entropy_decay: float = 1.0,
        advantage: Literal["rank", "zscore", "baseline"] = "rank",
        baseline_decay: float = 0.95,
        replay: int = 0,
        temperature: float = 1.0,
        logit_clip: float | None = None,
        max_grad_norm: float | None = 1.0,
        max_pending: int | None = None,
        risk_epsilon: float | None = 0.3,
        elite: int = 10,
        sil_coef: float = 1.0,
        sample_ahead: int = 32,
        grow_refill: bool = True,
        resample_passes: int = 2,
        without_replacement: bool = False,
        restart_after: int | None = 100,
        pool_draws: int = 64,
        pool_neighbours: int = 10,
        pool_two_edit: int = 1,
        prior_weight: float = 0.1,
        explore: float = 0.0,
        pool_random: int = 0,
        ei_xi: float = 0.0,
        restart_model: bool = True,
        model_min_points: int = 10,
        model_min_quality: float = 0.2,
        **options: Any,
    ):
        super().__init__(space, seed, **options)
        if advantage not in ("rank", "zscore", "baseline"):
            raise ValueError(f"advantage must be 'rank', 'zscore' or 'baseline', not {advantage!r}")
        if risk_epsilon is not None and not 0 < risk_epsilon <= 1:
            raise ValueError(f"risk_epsilon must be in (0, 1] or None, not {risk_epsilon!r}")
        self.hp = dict(
            controller=controller,
            lr=lr,
            batch_size=batch_size,
            ppo_epochs=ppo_epochs,
            clip=clip,
            entropy_coef=entropy_coef,
            entropy_decay=entropy_decay,
            advantage=advantage,
            baseline_decay=baseline_decay,
            replay=replay,
            temperature=temperature,
            logit_clip=logit_clip,
            max_grad_norm=max_grad_norm,
            max_pending=max_pending,
            risk_epsilon=risk_epsilon,
            elite=elite,
            sil_coef=sil_coef,
            sample_ahead=sample_ahead,
            grow_refill=grow_refill,
            resample_passes=resample_passes,
            without_replacement=without_replacement,
            restart_after=restart_after,
            pool_draws=pool_draws,
            pool_neighbours=pool_neighbours,
            pool_two_edit=pool_two_edit,
            prior_weight=prior_weight,
            explore=explore,
            pool_random=pool_random,
            ei_xi=ei_xi,
            restart_model=restart_model,
            model_min_points=model_min_points,
            model_min_quality=model_min_quality,
        )
        check_pool_options(self.hp)
        if restart_after is not None and restart_after < 1:
            raise ValueError(f"restart_after must be >= 1 or None, not {restart_after!r}")
        if controller not in ("lstm", "factorised"):
            raise ValueError(f"controller must be 'lstm' or 'factorised', not {controller!r}")
        self._net = dict(hidden=hidden, embed=embed, recurrent=controller == "lstm")
        self._new_policy()
        self.width = self.policy.width
        self._drawn: dict[str, Drawn] = {}
        self._last: Drawn | None = None
        self._queue: list[Drawn] = []
        self.seen: set[str] = set()
        self.learned: set[str] = set()
        self.batch: list[tuple[Drawn, float]] = []
        self.history: list[list[tuple[Drawn, float]]] = []
        self.elite: list[tuple[Drawn, float]] = []  # best first
        self._closed: set[tuple[int, ...]] = set()  # proposed sequences and prefixes with nothing left
        self._masks: dict[tuple[int, ...], np.ndarray] = {}  # prefix -> padded mask; a cache, not state
        self._keys: dict[tuple[int, ...], str] = {}  # tokens -> canonical key of pool candidates; a cache too
        self.baseline: float | None = None
        self.reward_var: float = 1.0
        self.entropy_coef = entropy_coef
        self.updates = self.restarts = 0
        # pool candidates' (masks, log-probabilities) under the policy of ``_scored_version`` (ppo_pool.py)
        self._scored: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._scored_version: tuple[int, int, int] | None = None
        self.best_reward = -math.inf
        self.since_best = 0  # architectures learnt from since the best reward last improved
        self.model = RewardModel(model_min_points, model_min_quality)  # every architecture learnt from, once

    def _new_policy(self) -> None:
        """A freshly initialised controller and optimiser, seeded from the searcher's RNG."""
        torch_seed = int(self.rng.integers(2**31 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            self.policy = Controller(tuple(self.space.sizes), **self._net)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.hp["lr"])

    def _restart(self) -> None:
        """Start the controller again when the search has stalled (``restart_after``).

        A policy-gradient controller can settle on one basin of the space (one placement of the
        expensive operation, say) and then only refine it. After ``restart_after`` new architectures
        without a better reward, the controller, its optimiser, its baseline and its elite start
        afresh, as restarts do in evolution strategies; what was proposed stays proposed (the cache
        answers repeats), so a new run explores rather than repeats, and the best found so far is the
        search's whatever the controller does next. With ``restart_model`` (the default) the reward
        model starts afresh too (``ppo_pool.py``); without it, it keeps every observation.
        """
        self._new_policy()
        self._restart_model()
        self.batch, self.history, self.elite, self._queue = [], [], [], []
        self.baseline, self.reward_var = None, 1.0
        self.entropy_coef = self.hp["entropy_coef"]
        self.since_best = 0
        self.restarts += 1

    # -- proposing --------------------------------------------------------------------------------
    def _propose(self) -> tuple[int, ...] | None:
        if self.hp["max_pending"] is not None and len(self.pending) >= self.hp["max_pending"]:
            return None
        chosen = self._pool_propose() if self._use_pool() else None
        self._last, key = chosen if chosen is not None else self._draw_unseen(self.seen)
        self.seen.add(key)
        self._mark_proposed(tuple(int(t) for t in self._last.tokens))
        return tuple(int(t) for t in self._last.tokens)

    def _draw_unseen(self, seen: set[str]) -> tuple[Drawn, str]:
        """The next queued draw not in ``seen`` (refilling the queue from the policy as needed).

        Sampling without replacement: draws of architectures already proposed are skipped (a peaked
        policy then explores the neighbourhood of its mode instead of repeating it). Bounded; a
        duplicate that gets through is the caller's to answer from its cache. Each refill within one
        call draws twice as many: when the policy is peaked, one batched pass of 512 costs about what
        one of 32 does, and the first unseen draw has the same distribution.
        """
        size = self.hp["sample_ahead"]
        for _ in range(self.hp["resample_passes"] * self.hp["sample_ahead"]):
            if not self._queue:
                self._queue = self._sample(size)
                size = min(2 * size, 1024) if self.hp["grow_refill"] else size
            drawn = self._queue.pop(0)
            key = self.space.canonical(drawn.tokens.tolist())
            if key not in seen:
                break
        return drawn, key

    def _mark_proposed(self, tokens: tuple[int, ...]) -> None:
        """Record a proposed sequence; a prefix all of whose allowed continuations were proposed is closed.

        Closed prefixes are masked out while sampling (``without_replacement``), so a peaked policy
        draws the most likely architecture it has *not* proposed yet — its mode's neighbourhood — in
        one pass instead of redrawing its mode again and again.
        """
        self._closed.add(tokens)
        for position in range(len(tokens) - 1, -1, -1):
            prefix = tokens[:position]
            allowed = np.flatnonzero(self._mask(prefix))
            if not all(prefix + (int(c),) in self._closed for c in allowed):
                break
            self._closed.add(prefix)

    def _mask(self, prefix: tuple[int, ...]) -> np.ndarray:
        """The space's mask after ``prefix``, padded to the controller's width (memoised: it is pure)."""
        mask = self._masks.get(prefix)
        if mask is None:
            allowed = np.asarray(self.space.mask(len(prefix), list(prefix)), dtype=bool)
            mask = np.zeros(self.width, dtype=bool)
            mask[: len(allowed)] = allowed
            self._masks[prefix] = mask
        return mask

    def _masks_for(self, prefixes: np.ndarray) -> np.ndarray:
        """Masks of many prefixes [B, P] at once, computed once per distinct prefix, not once per row.

        With ``without_replacement``, choices that lead only to proposed sequences are removed (unless
        that would leave none: then the space is exhausted below that prefix and duplicates are allowed).
        """
        if prefixes.shape[1] == 0:
            return np.broadcast_to(self._open_mask(()), (len(prefixes), self.width))
        distinct, inverse = np.unique(prefixes, axis=0, return_inverse=True)
        table = np.stack([self._open_mask(tuple(prefix)) for prefix in distinct.tolist()])
        return table[inverse.reshape(-1)]

    def _open_mask(self, prefix: tuple[int, ...]) -> np.ndarray:
        mask = self._mask(prefix)
        if not self.hp["without_replacement"] or not self._closed:
            return mask
        open_ = mask.copy()
        for choice in np.flatnonzero(mask):
            if prefix + (int(choice),) in self._closed:
                open_[choice] = False
        return open_ if open_.any() else mask

    @torch.no_grad()
    def _sample(self, count: int) -> list[Drawn]:
        """Draw ``count`` sequences from the current policy in one batched pass (cheap on a CPU).

        The draws wait in a queue until proposed; an update empties the queue, so no proposal comes
        from a policy older than the last update unless it was proposed before that update.
        """
        num = len(self.space.sizes)
        tokens = np.zeros((count, num), dtype=np.int64)
        masks = np.zeros((count, num, self.width), dtype=bool)
        logp = np.zeros((count, num), dtype=np.float32)
        rows = np.arange(count)
        state = None
        prev = torch.zeros(count, dtype=torch.long)
        for position in range(num):
            masks[:, position] = self._masks_for(tokens[:, :position])
            logits, state = self.policy.step(position, prev, state)
            log_probs = masked_log_softmax(
                logits, torch.from_numpy(masks[:, position]), self.hp["temperature"], self.hp["logit_clip"]
            ).numpy()
            probs = np.where(masks[:, position], np.exp(log_probs.astype(np.float64)), 0.0)
            cdf = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
            choice = np.minimum((cdf < self.rng.random(count)[:, None]).sum(1), self.width - 1)
            while not masks[rows, position, choice].all():  # float round-off at the top end
                choice[~masks[rows, position, choice]] -= 1
            tokens[:, position] = choice
            logp[:, position] = log_probs[rows, choice]
            prev = torch.from_numpy(choice)
        first = np.sort(np.unique(tokens, axis=0, return_index=True)[1])  # a pass proposes each sequence once
        return [Drawn(tokens[i], masks[i], logp[i]) for i in first]

    def _after_propose(self, proposal: Proposal) -> None:
        assert self._last is not None
        self._drawn[proposal.id] = self._last

    def _withdraw(self, proposal_id: str, tokens: tuple[int, ...]) -> None:
        del self._drawn[proposal_id]
        self.seen.discard(self.space.canonical(tokens))

    # -- learning ---------------------------------------------------------------------------------
    def _observe(self, proposal_id, tokens, reward, failed, constraint=None, objective=None) -> None:
        drawn = self._drawn.pop(proposal_id)
        key = self.space.canonical(tokens)
        if key in self.learned:
            # A duplicate answered from a cache: the policy already learnt from this architecture.
            # Learning again would only sharpen a converged policy (and cost an update per batch).
            return
        self.learned.add(key)
        self.model.add(tokens, reward, constraint, objective)
        self.batch.append((drawn, reward))
        self._remember_elite(drawn, reward)
        if reward > self.best_reward:
            self.best_reward, self.since_best = reward, 0
        else:
            self.since_best += 1
        if len(self.batch) >= self.hp["batch_size"]:
            self._update()
        if self.hp["restart_after"] is not None and self.since_best >= self.hp["restart_after"]:
            self._restart()

    def _advantages(self, rewards: np.ndarray) -> np.ndarray:
        kind = self.hp["advantage"]
        if kind == "rank":
            ranks = rewards.argsort().argsort().astype(np.float64)
            return ranks / max(len(rewards) - 1, 1) - 0.5
        if kind == "zscore":
            return (rewards - rewards.mean()) / (rewards.std() + 1e-8)
        return (rewards - self.baseline) / math.sqrt(self.reward_var + 1e-8)

    def _track_rewards(self, rewards: np.ndarray) -> None:
        """Moving-average baseline and variance of rewards (the value the other advantages compare to)."""
        decay = self.hp["baseline_decay"]
        if self.baseline is None:
            self.baseline = float(rewards.mean())
            self.reward_var = float(rewards.var()) or 1.0
            return
        self.baseline = decay * self.baseline + (1 - decay) * float(rewards.mean())
        self.reward_var = decay * self.reward_var + (1 - decay) * float(((rewards - self.baseline) ** 2).mean())

    def _remember_elite(self, drawn: Drawn, reward: float) -> None:
        """Keep the ``elite`` best architectures seen so far (each once: ``learned`` dedups upstream)."""
        size = self.hp["elite"]
        if size <= 0 or (len(self.elite) >= size and reward <= self.elite[-1][1]):
            return
        self.elite.append((drawn, reward))
        self.elite.sort(key=lambda item: -item[1])
        del self.elite[size:]

    def _risk_seeking(self, batch: list[tuple[Drawn, float]]) -> list[tuple[Drawn, float]]:
        """The top-epsilon samples of the batch, advantage = reward - quantile (scaled by the running std).

        Training only on the best tail optimises the best case rather than the mean — what a search
        for one best architecture wants (Petersen et al. 2021, risk-seeking policy gradient).
        """
        rewards = np.array([r for _, r in batch], dtype=np.float64)
        quantile = float(np.quantile(rewards, 1.0 - self.hp["risk_epsilon"]))
        scale = math.sqrt(self.reward_var + 1e-8)
        return [(drawn, (r - quantile) / scale) for drawn, r in batch if r >= quantile]

    def _update(self) -> None:
        """PPO epochs on the new batch and the ``replay`` batches before it (their rewards, not stale advantages).

        Advantages are computed over that whole pool at each update, so a replayed architecture is
        ranked against what the policy finds now; its importance ratio is taken to the policy that drew
        it, and the clip stops the update once the policy has moved far enough towards (or away from) it.
        """
        batch, self.batch = self.batch, []
        pool = batch + [item for old in self.history for item in old]
        if self.hp["replay"]:
            self.history = [batch, *self.history][: self.hp["replay"]]
        rewards = np.array([r for _, r in pool], dtype=np.float64)
        fresh = rewards[: len(batch)]  # the pool starts with the new batch
        if self.baseline is None:
            self._track_rewards(fresh)
        if self.hp["risk_epsilon"] is not None:
            samples = self._risk_seeking(pool)
        else:
            advantages = self._advantages(rewards)
            samples = [(drawn, float(a)) for (drawn, _), a in zip(pool, advantages, strict=True)]
        # The moving baseline (self-imitation's V, and the scale of risk advantages) sees each reward once.
        self._track_rewards(fresh)
        ppo_set, sil_set = stack_samples(samples), self._self_imitation_set()
        for _ in range(self.hp["ppo_epochs"]):
            loss = self._loss(ppo_set, sil_set)
            self.optimizer.zero_grad()
            loss.backward()
            if self.hp["max_grad_norm"] is not None:
                nn.utils.clip_grad_norm_(self.policy.parameters(), self.hp["max_grad_norm"])
            self.optimizer.step()
        self.entropy_coef *= self.hp["entropy_decay"]
        self.updates += 1
        self._queue = []
        if self.hp["pool_draws"]:
            self.model.refit()

    def _loss(self, ppo_set, sil_set) -> torch.Tensor:
        """Clipped surrogate minus the entropy bonus, plus the self-imitation term; one controller pass.

        The surrogate's ratio is taken to the behaviour policy that drew each sample (stale proposals
        and replayed batches included). Self-imitation raises the log-probability of the elite
        architectures in proportion to their advantage, ``-log pi * max(R - V, 0)``, with no ratio:
        it is off-policy by design (Oh et al. 2018).
        """
        tokens, masks, old_logp, adv = ppo_set
        count = len(adv)
        if sil_set is not None:
            tokens, masks = torch.cat([tokens, sil_set[0]]), torch.cat([masks, sil_set[1]])
        logp, entropy = self.policy.evaluate(tokens, masks, self.hp["temperature"], self.hp["logit_clip"])
        logp = logp.sum(1)
        ratio = torch.exp(logp[:count] - old_logp.sum(1))
        clip = self.hp["clip"]
        surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
        loss = -surrogate.mean() - self.entropy_coef * entropy[:count].sum(1).mean()
        if sil_set is not None:
            loss = loss - self.hp["sil_coef"] * (logp[count:] * sil_set[2]).mean()
        return loss

    def _self_imitation_set(self):
        """Elite samples with a positive advantage max(R - V, 0) / std, or None when there are none."""
        if not self.hp["sil_coef"] or not self.elite or self.baseline is None:
            return None
        scale = math.sqrt(self.reward_var + 1e-8)
        chosen = [(drawn, (r - self.baseline) / scale) for drawn, r in self.elite if r > self.baseline]
        if not chosen:
            return None
        tokens, masks, _, adv = stack_samples(chosen)
        return tokens, masks, adv

    # -- state ------------------------------------------------------------------------------------
    def _get_state(self) -> Any:
        return {
            "policy": copy.deepcopy(self.policy.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "drawn": dict(self._drawn),
            "batch": list(self.batch),
            "queue": list(self._queue),
            "seen": set(self.seen),
            "learned": set(self.learned),
            "history": [list(h) for h in self.history],
            "elite": list(self.elite),
            "closed": set(self._closed),
            "baseline": self.baseline,
            "reward_var": self.reward_var,
            "entropy_coef": self.entropy_coef,
            "updates": self.updates,
            "best_reward": self.best_reward,
            "since_best": self.since_best,
            "restarts": self.restarts,
            "model": self.model.state(),
            "scored": (dict(self._scored), self._scored_version),
        }

    def _set_state(self, state: Any) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._drawn = dict(state["drawn"])
        self.batch = list(state["batch"])
        self._queue = list(state["queue"])
        self.seen = set(state["seen"])
        self.learned = set(state["learned"])
        self.history = [list(h) for h in state["history"]]
        self.elite = list(state["elite"])
        self._closed = set(state["closed"])
        self.baseline = state["baseline"]
        self.reward_var = state["reward_var"]
        self.entropy_coef = state["entropy_coef"]
        self.updates = state["updates"]
        self.best_reward = state.get("best_reward", -math.inf)
        self.since_best = state.get("since_best", 0)
        self.restarts = state.get("restarts", 0)
        self._scored, self._scored_version = state.get("scored", ({}, None))
        self._scored = dict(self._scored)
        self.model = RewardModel(self.hp["model_min_points"], self.hp["model_min_quality"])
        if "model" in state:
            self.model.load(state["model"])
