"""One adapter that makes any geonas searcher a Ray Tune ``Searcher``.

Tune calls ``suggest(trial_id)`` for a config and ``on_trial_complete`` with the trial's last result;
the adapter maps Tune's trial ids to proposal ids, turns the result into a reward (``reward_fn``) and
deduplicates architectures (:class:`~search_spaces.searchers.dedup.Deduplicated`), so a converged
searcher never makes Tune train an architecture twice. Wrap it in ``ConcurrencyLimiter`` to bound the
trials in flight. ``save``/``restore`` persist the searcher's whole state and the pending trial map,
written to a temporary file and renamed, so a killed driver resumes exactly where it stopped.
Tested against Ray 2.60.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher as TuneSearcher

from search_spaces.errors import SpecError
from search_spaces.searchers.base import Searcher
from search_spaces.searchers.dedup import Deduplicated

__all__ = ["TuneAdapter", "finite_metric", "reward_from_result"]


def finite_metric(result: dict[str, Any], key: str) -> float | None:
    """``result[key]`` as a float, or ``None`` when absent, not a number or not finite."""
    value = result.get(key)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def reward_from_result(result: dict[str, Any]) -> float | None:
    """The default ``reward_fn``: ``result["reward"]``, or ``None`` (a failed trial) when absent or NaN."""
    return finite_metric(result, "reward")


class TuneAdapter(TuneSearcher):
    """A Tune ``Searcher`` over a geonas searcher.

    ``to_config(tokens)`` turns a proposal into the trial's config (the driver passes
    ``lambda t: {"arch": space.decode(t).to_dict()}``); the suggested config is
    ``{"tokens": [...], **to_config(tokens)}``. ``reward_fn(result)`` reads the reward from the last
    reported result (``None`` = failed). Trials that error are observed as failed. ``constraint_fn(result)``,
    when given, reads the latency constraint (``<= 0``: meets the target; ``None``: unknown) that
    searchers modelling feasibility use; ``objective_fn(result)``, when given, the objective the reward
    was computed from (the trial's mIoU; ``None``: not measured), which reward models fit.
    """

    def __init__(
        self,
        searcher: Searcher | Deduplicated,
        to_config: Callable[[Sequence[int]], dict[str, Any]],
        reward_fn: Callable[[dict[str, Any]], float | None] = reward_from_result,
        *,
        constraint_fn: Callable[[dict[str, Any]], float | None] | None = None,
        objective_fn: Callable[[dict[str, Any]], float | None] | None = None,
        metric: str = "reward",
        mode: str = "max",
        dedupe: bool = True,
    ):
        super().__init__(metric=metric, mode=mode)
        # Not named ``searcher``: Tune's SearchGenerator follows ``.searcher`` attributes down to the
        # "base" searcher when it checkpoints, and would land on our inner object.
        self.inner = Deduplicated(searcher) if dedupe and isinstance(searcher, Searcher) else searcher
        self.to_config = to_config
        self.reward_fn = reward_fn
        self.constraint_fn = constraint_fn
        self.objective_fn = objective_fn
        self.trials: dict[str, str] = {}  # Tune trial id -> proposal id
        self.tokens: dict[str, list[int]] = {}  # proposal id -> tokens, while in flight
        self.replay: list[str] = []  # proposals to hand out again after a resume

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        # The search space is the token space; Tune's metric/mode only matter for reporting.
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.replay:
            proposal_id = self.replay.pop(0)
            tokens = self.tokens[proposal_id]
        else:
            proposal = self.inner.propose()
            if proposal is None:
                return None
            proposal_id, tokens = proposal.id, list(proposal.tokens)
            self.tokens[proposal_id] = tokens
        self.trials[trial_id] = proposal_id
        return {"tokens": list(tokens), **self.to_config(tokens)}

    def requeue_pending(self) -> int:
        """After a restore: the proposals that were in flight when the driver stopped are handed out
        again, under new trial ids, before any new proposal; the searcher sees each result once."""
        self.replay = [pid for pid in self.trials.values() if pid in self.tokens] + [
            pid for pid in self.replay if pid not in self.trials.values()
        ]
        self.trials = {}
        return len(self.replay)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        proposal_id = self.trials.pop(trial_id, None)
        if proposal_id is None:
            return
        self.tokens.pop(proposal_id, None)
        reward = None if error or not result else self.reward_fn(result)
        constraint = None if not result or self.constraint_fn is None else self.constraint_fn(result)
        objective = None if error or not result or self.objective_fn is None else self.objective_fn(result)
        self.inner.observe(proposal_id, reward, constraint, objective)

    # -- persistence ------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "searcher": self.inner.state_dict(),
            "trials": dict(self.trials),
            "tokens": dict(self.tokens),
            "replay": list(self.replay),
            "name": self.inner.name,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.inner.name:
            raise SpecError(
                f"searcher state was saved by {state.get('name')!r}; restore it into a {state.get('name')!r} "
                f"searcher, not {self.inner.name!r}"
            )
        self.inner.load_state_dict(state["searcher"])
        self.trials = dict(state["trials"])
        self.tokens = dict(state.get("tokens", {}))
        self.replay = list(state.get("replay", []))

    def save(self, checkpoint_path: str) -> None:
        path = Path(checkpoint_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(self.get_state(), f, protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
