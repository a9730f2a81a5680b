"""Model screening: rank a searcher's own candidates with a Gaussian-process reward model.

:class:`ModelScreening` is mixed into a searcher that draws candidates from a queue (PPO): before each
trial it takes ``model_screen`` distinct unseen draws, scores them by expected improvement under a
:class:`~search_spaces.searchers.surrogate.HammingGP` fitted to every architecture learnt from, and
proposes the best; the others go back to the front of the queue. The host provides ``hp``
(``model_screen``, ``model_min_points``, ``model_min_quality``), ``observed`` (tokens, reward) pairs,
``seen`` canonical keys, ``_queue``, ``_draw_unseen(seen)`` and the ``model_fit``/``_model`` slots, and
calls :meth:`_choose_model` when it updates.
"""

from __future__ import annotations

import numpy as np

from search_spaces.searchers.controller import Drawn
from search_spaces.searchers.surrogate import HammingGP

__all__ = ["ModelScreening"]


class ModelScreening:
    """Expected-improvement screening of a searcher's draws (see the module docstring)."""

    def _screen(self, model: HammingGP) -> tuple[Drawn, str]:
        """Of ``model_screen`` distinct unseen draws of the policy, the one of highest expected improvement.

        The reward model only ranks what the policy proposes: the policy keeps its own distribution
        (and its exploration), trained on real rewards alone, while trials go to the draws the model
        expects most from, as TPE ranks its candidates by density ratio. The draws not chosen return
        to the front of the queue and are ranked again at the next proposal.
        """
        candidates: list[tuple[Drawn, str]] = []
        taken = set(self.seen)
        for _ in range(self.hp["model_screen"]):
            drawn, key = self._draw_unseen(taken)
            if key in taken:
                break  # the space (or the policy's support) has no more unseen architectures
            taken.add(key)
            candidates.append((drawn, key))
        if not candidates:
            return drawn, key
        best = max(r for _, r in self.observed)
        scores = model.expected_improvement(np.stack([d.tokens for d, _ in candidates]), best)
        choice = int(np.argmax(scores))
        self._queue = [d for i, (d, _) in enumerate(candidates) if i != choice] + self._queue
        return candidates[choice]

    def _screening_model(self) -> HammingGP | None:
        """The reward model over every architecture learnt from, when screening is on and it ranks well.

        Hyper-parameters (and the leave-one-out quality that gates the model) are chosen at each update
        (``_update``); between updates the model is refitted with them as rewards arrive, once per new
        observation (one Cholesky factorisation).
        """
        if not self.hp["model_screen"] or self.model_fit is None:
            return None
        theta, noise, quality = self.model_fit
        if quality < self.hp["model_min_quality"]:
            return None
        if self._model is None or self._model[0] != len(self.observed):
            self._model = (len(self.observed), HammingGP().fit(*self._observations(), theta, noise))
        return self._model[1]

    def _choose_model(self) -> None:
        """Pick the reward model's hyper-parameters by marginal likelihood and measure how well it ranks."""
        if not self.hp["model_screen"] or len(self.observed) < self.hp["model_min_points"]:
            return
        model = HammingGP().fit(*self._observations())
        self.model_fit = (float(model.theta), float(model.noise), float(model.quality))
        self._model = (len(self.observed), model)

    def _observations(self) -> tuple[np.ndarray, np.ndarray]:
        """Every architecture learnt from as tokens [n, K], and their rewards [n]: the model's data."""
        return np.array([t for t, _ in self.observed]), np.array([r for _, r in self.observed])
