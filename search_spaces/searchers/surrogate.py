"""A Gaussian-process reward model over token sequences: what a searcher imagines before it spends a trial.

Architectures are compared position by position: the kernel is ``exp(-theta * d / K)`` with ``d`` the
number of the ``K`` token positions at which two sequences differ (a Hamming kernel, the categorical
kernel of COMBO/BOSS-style NAS surrogates). The length scale ``theta`` and the noise are picked by
marginal likelihood from a small grid at each fit, so the model needs no tuning per space; rewards are
standardised first. It is exact (a Cholesky of the ``n x n`` kernel), cheap for the few hundred
architectures a search observes, and knows nothing of any particular space beyond the tokens.

``quality`` is the Spearman correlation between the observed rewards and their leave-one-out
predictions (closed form for a GP), computed when the hyper-parameters are chosen: how well the model
ranks architectures it has not seen, which a searcher should check before it trusts the model.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.special import ndtr
from scipy.stats import spearmanr

__all__ = ["HammingGP", "spearman"]

_THETAS = (0.5, 1.0, 2.0, 4.0, 8.0)
_NOISES = (1e-3, 1e-2, 1e-1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two vectors, tied values sharing their mean rank (0.0 when either is constant).

    Ties matter here: failed trials all score the same reward.
    """
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


class HammingGP:
    """Exact GP regression on integer token sequences with a Hamming kernel (see the module docstring)."""

    def __init__(self, thetas: tuple[float, ...] = _THETAS, noises: tuple[float, ...] = _NOISES) -> None:
        self.thetas, self.noises = thetas, noises
        self.theta = self.noise = None
        self.quality = 0.0

    def _distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a[:, None, :] != b[None, :, :]).mean(-1)

    def fit(
        self, tokens: np.ndarray, rewards: np.ndarray, theta: float | None = None, noise: float | None = None
    ) -> HammingGP:
        """Fit to ``tokens`` [n, K] and ``rewards`` [n]; (theta, noise) by marginal likelihood unless given."""
        self.x = np.asarray(tokens, dtype=np.int64)
        y = np.asarray(rewards, dtype=np.float64)
        self.mean, self.scale = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.mean) / self.scale
        distance = self._distance(self.x, self.x)
        eye = np.eye(len(z))
        best = None
        searched = theta is None or noise is None
        for t in self.thetas if theta is None else (theta,):
            kernel = np.exp(-t * distance)
            for n in self.noises if noise is None else (noise,):
                try:
                    factor = cho_factor(kernel + n * eye, lower=True)
                except np.linalg.LinAlgError:
                    continue
                alpha = cho_solve(factor, z)
                nll = 0.5 * float(z @ alpha) + float(np.log(np.diag(factor[0])).sum())
                if best is None or nll < best[0]:
                    best = (nll, t, n, factor, alpha)
        if best is None:
            raise np.linalg.LinAlgError(f"kernel not positive definite at theta={theta}, noise={noise}")
        _, self.theta, self.noise, self._factor, self._alpha = best
        if searched:  # leave-one-out quality only when choosing hyper-parameters (it costs another n^3)
            inverse_diag = np.diag(cho_solve(self._factor, eye))
            self.quality = spearman(z - self._alpha / inverse_diag, z) if len(z) > 2 else 0.0
        return self

    def predict(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the reward at each row of ``tokens`` [m, K]."""
        cross = np.exp(-self.theta * self._distance(np.asarray(tokens, dtype=np.int64), self.x))
        mean = cross @ self._alpha
        v = solve_triangular(self._factor[0], cross.T, lower=True)
        std = np.sqrt(np.clip(1.0 - (v**2).sum(0), 1e-12, None))
        return self.mean + self.scale * mean, self.scale * std

    def expected_improvement(self, tokens: np.ndarray, best: float) -> np.ndarray:
        """Expected improvement over ``best`` at each row of ``tokens`` (Jones et al. 1998)."""
        mean, std = self.predict(tokens)
        z = (mean - best) / std
        return std * (z * ndtr(z) + np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi))
