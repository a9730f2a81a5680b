"""PPO's pool acquisition: each proposal is the best of a large pool by the reward model and the policy.

:class:`PoolAcquisition` is mixed into :class:`~.ppo.PPOSearcher`. Once the reward model
(:class:`~.acquisition.RewardModel`) ranks held-out architectures well enough, every proposal is chosen
from a pool of ``pool_draws`` fresh draws of the policy plus the one-edit neighbours of the
``pool_neighbours`` best architectures seen, none proposed before, by

    score(x) = log EI(x) + log P(feasible | x) + prior_weight * log pi(x)

so the model says where improvement is likely, and the policy, trained on real rewards, is the prior
that keeps the search in the region it has learnt (a product ``EI * P(feasible) * pi^beta``).

The chosen architecture's log-probability under the current policy, for the masks the policy samples
under, is stored as the proposal's behaviour log-probability: PPO's importance ratio ``pi_new / pi_old``
then starts from the policy that was current when the proposal was sent, whether the policy drew it or
it is a neighbour the policy never drew. A draw carries the log-probability it was drawn with; the other
candidates are scored under the policy once per policy (the neighbours of the best seen recur from one
proposal to the next, and the policy changes only at an update or a restart), which keeps a proposal
within its budget now that the model is ready, and the pool used, for most of a search.

The model (:class:`~.acquisition.RewardModel`) fits the objective the trials report (accuracy, mIoU)
and the latency constraint apart, not the latency-penalised reward: on the NAS-Bench-201 latency table
(``bench/searchers.py``, seeds 100-119, not the reported ones) that one change took PPO's median trials
to target from 59, 80.5, 146.5, 77.5, 80.5 and 50.5 to 50, 66, 98, 94, 58 and 52 on the six devices
(titan_rtx_256, gold_6226, raspi4, pixel3, fpga, eyeriss) and its hits from 118 to 120 of 120.

Two options widen what is tried. ``explore`` (0 to 1, default 0): the share of proposals, while the
model is ready, that are plain draws of the policy instead of the pool's argmax (chosen with the
searcher's seeded RNG, so a run and a restored searcher repeat it); plain draws keep PPO's samples
on-policy and diverse. ``pool_random`` (default 0): uniform architectures of the space (each position
uniform among its allowed choices) added to the pool, so EI can reach far from the policy and the best
seen where the model is unsure; ``log pi`` still weighs on them through ``prior_weight``. ``ei_xi``
(default 0, reward units) raises EI's incumbent, trading predicted gains near the best for uncertainty.
``restart_model`` (default True): when the controller restarts (``restart_after``), the reward model
starts afresh too, from the observations after the restart only, as a stalled trust region restarts in
TuRBO (Eriksson et al. 2019); what was proposed stays proposed, and the best found stays the search's.
A model fitted on a stalled basin keeps ranking that basin's neighbours first; a fresh one lets the
restarted search settle where it now finds good architectures. On the NAS-Bench-201 latency table
(``bench/searchers.py``, seeds 0-9) it turned the seeds that missed the target in 500 trials on pixel3
(2 of 10) and fpga (1) into hits and changed no hit before the first restart; ``explore=0.25`` (slower on
five devices), ``pool_random=64`` with ``prior_weight=0.3`` (and ``ei_xi``) did not raise the hit share.
``pool_two_edit`` (default 1) adds the two-edit neighbours of that many best architectures seen, so the
pool reaches past a one-edit local optimum: under a median-latency target NB201 has about a hundred such
optima below the target, most two to four edits from a target architecture. With it (seeds 0-19, 100-119
and 200-239, ``bench/results/searchers_compare-two-edit.json``) PPO reached the target in all 480
searches, where ``pool_two_edit`` 0 missed twice on titan_rtx_256. On NAS-FPN's 31 positions it makes
the pool about 5,000 candidates instead of about 900, so a proposal there costs more (see the README).

The host provides ``hp`` (``pool_draws``, ``pool_neighbours``, ``pool_two_edit``, ``prior_weight``, ``explore``,
``pool_random``, ``ei_xi``, ``restart_model``, ``model_min_points``, ``model_min_quality``), ``model``, ``seen``,
``policy``, ``space``, ``rng``, ``_sample(count)`` and ``_masks_for(prefixes)``.
"""

from __future__ import annotations

import numpy as np
import torch

from search_spaces.searchers.acquisition import RewardModel, one_edit_neighbours
from search_spaces.searchers.controller import Drawn
from search_spaces.tokens import sample_uniform

__all__ = ["PoolAcquisition", "check_pool_options"]

_KEYS_KEPT = 50_000  # canonical keys remembered (about 20 MB on NAS-FPN), then forgotten all at once


def check_pool_options(hp: dict) -> None:
    """Raise ``ValueError`` for pool options out of range (``hp``: the searcher's hyper-parameters)."""
    counts = ("pool_draws", "pool_neighbours", "pool_two_edit", "pool_random")
    if any(hp[name] < 0 for name in counts) or hp["model_min_points"] < 3:
        raise ValueError(
            f"{', '.join(counts)} must be >= 0 and model_min_points >= 3, not "
            f"{', '.join(str(hp[name]) for name in counts)} and {hp['model_min_points']}"
        )
    if not 0.0 <= hp["explore"] <= 1.0:
        raise ValueError(f"explore must be a share in [0, 1], not {hp['explore']!r}")
    if hp["prior_weight"] < 0 or hp["ei_xi"] < 0:
        raise ValueError(f"prior_weight and ei_xi must be >= 0, not {hp['prior_weight']!r} and {hp['ei_xi']!r}")


class PoolAcquisition:
    """Chooses each proposal from a pool by the acquisition plus the policy's log-probability."""

    def _use_pool(self) -> bool:
        """Whether this proposal comes from the pool: the model is on and ready, and (with ``explore``) the
        seeded draw did not ask for a plain policy draw. No RNG is used when ``explore`` is 0."""
        if not self.hp["pool_draws"] or not self.model.ready():
            return False
        return not (self.hp["explore"] > 0 and self.rng.random() < self.hp["explore"])

    def _restart_model(self) -> None:
        """With ``restart_model``, a fresh reward model (called when the controller restarts)."""
        if self.hp["restart_model"]:
            self.model = RewardModel(self.hp["model_min_points"], self.hp["model_min_quality"])

    def _pool(self) -> dict[str, tuple[tuple[int, ...], Drawn | None]]:
        """Unseen candidates by key: the policy's draws (with what they were drawn under), the neighbours
        of the best seen, then uniform ones (``None``: not drawn, to be scored under the policy)."""
        candidates: dict[str, tuple[tuple[int, ...], Drawn | None]] = {}

        def offer(tokens: tuple[int, ...], drawn: Drawn | None = None) -> None:
            key = self._key(tokens)
            if key not in self.seen and key not in candidates:
                candidates[key] = (tokens, drawn)

        for drawn in self._sample(self.hp["pool_draws"]):
            offer(tuple(int(t) for t in drawn.tokens), drawn)
        ranked = np.argsort(-np.asarray(self.model.rewards), kind="stable")
        for index in ranked[: self.hp["pool_neighbours"]]:
            for tokens in one_edit_neighbours(self.space, self.model.tokens[int(index)], self.rng):
                offer(tokens)
        for index in ranked[: self.hp["pool_two_edit"]]:
            for near in one_edit_neighbours(self.space, self.model.tokens[int(index)], self.rng):
                for tokens in one_edit_neighbours(self.space, near, self.rng):
                    offer(tokens)
        for _ in range(self.hp["pool_random"]):
            offer(tuple(int(t) for t in sample_uniform(self.space, self.rng)))
        return candidates

    def _key(self, tokens: tuple[int, ...]) -> str:
        """The space's canonical key of ``tokens``, remembered: the neighbours of the best seen recur from
        one proposal to the next, and on NAS-FPN a key is a decode and a hash. Bounded, not state."""
        key = self._keys.get(tokens)
        if key is None:
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            key = self._keys[tokens] = self.space.canonical(tokens)
        return key

    @torch.no_grad()
    def policy_log_probs(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks [M, K, W] and per-position log-probabilities [M, K] of ``tokens`` [M, K] under the policy now.

        The masks are those the policy samples under (``_masks_for``), so a draw's stored
        log-probabilities and these agree for the same policy.
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        masks = np.stack([self._masks_for(tokens[:, :position]) for position in range(tokens.shape[1])], axis=1)
        logp, _ = self.policy.evaluate(
            torch.from_numpy(tokens), torch.from_numpy(masks), self.hp["temperature"], self.hp["logit_clip"]
        )
        return masks, logp.numpy()

    def _scored_under_policy(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks [M, K, W] and log-probabilities [M, K] of candidates the policy did not draw, each
        computed once per policy: the neighbours of the best seen recur from proposal to proposal, and
        the policy changes only at an update or a restart (and its masks at every proposal with
        ``without_replacement``, which keeps nothing). Remembered by token sequence, not by canonical
        key: two sequences of one architecture (swapped inputs, another repair) have their own
        probabilities, and the one sent must carry its own."""
        version = (self.updates, self.restarts, len(self.seen) if self.hp["without_replacement"] else 0)
        if self._scored_version != version:
            self._scored, self._scored_version = {}, version
        rows = [tuple(row) for row in tokens.tolist()]
        missing = [i for i, row in enumerate(rows) if row not in self._scored]
        if missing:
            masks, logp = self.policy_log_probs(tokens[missing])
            for at, i in enumerate(missing):
                self._scored[rows[i]] = (masks[at], logp[at])
        return np.stack([self._scored[row][0] for row in rows]), np.stack([self._scored[row][1] for row in rows])

    def _pool_propose(self) -> tuple[Drawn, str] | None:
        """The pool's best candidate by the acquisition plus ``prior_weight * log pi``; None if the pool is empty.

        A draw's log-probability is the one it was drawn with; the others' come from
        :meth:`_scored_under_policy`. Both are under the current policy and the masks it samples under.
        """
        candidates = self._pool()
        if not candidates:
            return None
        keys = list(candidates)
        tokens = np.array([candidates[k][0] for k in keys], dtype=np.int64)
        masks = np.zeros((len(keys), tokens.shape[1], self.width), dtype=bool)
        logp = np.zeros(tokens.shape, dtype=np.float32)
        undrawn = []
        for i, k in enumerate(keys):
            drawn = candidates[k][1]
            if drawn is None:
                undrawn.append(i)
            else:
                masks[i], logp[i] = drawn.masks, drawn.logp
        if undrawn:
            masks[undrawn], logp[undrawn] = self._scored_under_policy(tokens[undrawn])
        score = self.model.log_acquisition(tokens, self.hp["ei_xi"]) + self.hp["prior_weight"] * logp.sum(1)
        best = int(np.argmax(score))
        return Drawn(tokens[best], masks[best], logp[best].astype(np.float32)), keys[best]
