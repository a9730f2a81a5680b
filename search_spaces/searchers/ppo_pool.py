"""PPO's pool acquisition: each proposal is the best of a large pool by the reward model and the policy.

:class:`PoolAcquisition` is mixed into :class:`~.ppo.PPOSearcher`. Once the reward model
(:class:`~.acquisition.RewardModel`) ranks held-out architectures well enough, every proposal is chosen
from a pool of ``pool_draws`` fresh draws of the policy plus the one-edit neighbours of the
``pool_neighbours`` best architectures seen, none proposed before, by

    score(x) = log EI(x) + log P(feasible | x) + prior_weight * log pi(x)

so the model says where improvement is likely, and the policy, trained on real rewards, is the prior
that keeps the search in the region it has learnt (a product ``EI * P(feasible) * pi^beta``).

The chosen architecture's log-probability under the current policy is computed at proposal time, for
the masks the policy samples under, and stored as the proposal's behaviour log-probability: PPO's
importance ratio ``pi_new / pi_old`` then starts from the policy that was current when the proposal was
sent, whether the policy drew it or it is a neighbour the policy never drew.

The host provides ``hp`` (``pool_draws``, ``pool_neighbours``, ``prior_weight``), ``model``, ``seen``,
``policy``, ``space``, ``rng``, ``_sample(count)`` and ``_masks_for(prefixes)``.
"""

from __future__ import annotations

import numpy as np
import torch

from search_spaces.searchers.acquisition import one_edit_neighbours
from search_spaces.searchers.controller import Drawn

__all__ = ["PoolAcquisition"]


class PoolAcquisition:
    """Chooses each proposal from a pool by the acquisition plus the policy's log-probability."""

    def _pool(self) -> dict[str, tuple[int, ...]]:
        """Unseen candidates by canonical key: the policy's draws, then the neighbours of the best seen."""
        candidates: dict[str, tuple[int, ...]] = {}

        def offer(tokens: tuple[int, ...]) -> None:
            key = self.space.canonical(tokens)
            if key not in self.seen and key not in candidates:
                candidates[key] = tokens

        for drawn in self._sample(self.hp["pool_draws"]):
            offer(tuple(int(t) for t in drawn.tokens))
        order = np.argsort(-np.asarray(self.model.rewards), kind="stable")[: self.hp["pool_neighbours"]]
        for index in order:
            for tokens in one_edit_neighbours(self.space, self.model.tokens[int(index)], self.rng):
                offer(tokens)
        return candidates

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

    def _pool_propose(self) -> tuple[Drawn, str] | None:
        """The pool's best candidate by the acquisition plus ``prior_weight * log pi``; None if the pool is empty."""
        candidates = self._pool()
        if not candidates:
            return None
        keys = list(candidates)
        tokens = np.array([candidates[k] for k in keys], dtype=np.int64)
        masks, logp = self.policy_log_probs(tokens)
        score = self.model.log_acquisition(tokens) + self.hp["prior_weight"] * logp.sum(1)
        best = int(np.argmax(score))
        return Drawn(tokens[best], masks[best], logp[best].astype(np.float32)), keys[best]
