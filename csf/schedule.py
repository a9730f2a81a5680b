"""Learning-rate schedules of CSF pretraining: a linear warm-up, then constant or a cosine decay.

``lr_factor(name, step, warmup, steps)`` is the multiplier of the base learning rate at ``step``
(0-based). Both schedules warm up linearly over ``warmup`` steps; ``cosine`` then decays to 0 at
``steps`` along half a cosine (SGDR's shape without restarts, as SimCLR and MoCo v2 train), ``constant``
holds the base rate (what CSF pretraining did before the schedule was an option).

The default is ``constant``. On the IDTReeS plots (``bench/csf_real.py``, cpu profile, 400 steps, 3
seeds) the decay did not pay: through the product, CSF beat random init's spread in 10 of 16 goal
cells under cosine k-NN and 5 under Euclidean, against 10 and 9 at a constant rate, with a lower mean
gain (2.4 against 3.1 pp, cosine k-NN; ``bench/results/history/csf_real-lr-cosine-871b9bf.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["LR_SCHEDULES", "lr_factor"]


def _constant(progress: float) -> float:
    return 1.0


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


#: schedule name -> factor after the warm-up, as a function of the share of post-warm-up steps done
LR_SCHEDULES: dict[str, Callable[[float], float]] = {"constant": _constant, "cosine": _cosine}


def lr_factor(name: str, step: int, warmup: int, steps: int) -> float:
    """The base learning rate's multiplier at 0-based ``step`` of ``steps`` (see the module note)."""
    try:
        after_warmup = LR_SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown lr_schedule {name!r}; valid: {sorted(LR_SCHEDULES)}") from None
    if step < warmup:
        return (step + 1) / warmup
    return after_warmup((step - warmup) / max(1, steps - warmup))
