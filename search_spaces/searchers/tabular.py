"""Searchers over a tabular benchmark, in-process: every architecture's result is a table lookup.

:class:`TableSpace` turns any CSV with an ``arch`` column, accuracy columns and ``lat_<device>``
columns into a :class:`TokenSpace`. Each ``arch`` string is split into fields (NAS-Bench-201's
``|nor_conv_3x3~0|+|skip_connect~0|none~1|+...`` gives six edge ops); position ``i`` chooses among the
values seen at field ``i``, and the masks allow only prefixes that exist in the table, so partial
tables work too. :func:`run_search` drives any searcher over it with several proposals outstanding,
completing them in random order — the same asynchrony a Ray Tune run has, at table-lookup speed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from search_spaces.errors import DataError, GeonasError, SpecError
from search_spaces.feasibility import latency_constraint
from search_spaces.rewards import compute_reward
from search_spaces.searchers.base import Searcher
from search_spaces.searchers.dedup import Deduplicated

__all__ = ["TableSpace", "SearchTrace", "run_search"]

_FIELD = re.compile(r"[^|+]+")
_EDGE_SUFFIX = re.compile(r"~\d+$")


def _fields(arch: str) -> list[str]:
    return [_EDGE_SUFFIX.sub("", f) for f in _FIELD.findall(arch)]


class TableSpace:
    """A token space over the rows of a tabular benchmark (see the module docstring)."""

    def __init__(self, frame, *, name: str = "table"):
        if "arch" not in frame.columns:
            raise DataError(f"{name}: no 'arch' column; columns are {', '.join(map(str, frame.columns))}")
        self.name = name
        self.frame = frame.reset_index(drop=True)
        self.archs = [str(a) for a in self.frame["arch"]]
        fields = [_fields(a) for a in self.archs]
        lengths = {len(f) for f in fields}
        if len(lengths) != 1:
            raise DataError(
                f"{name}: 'arch' strings split into different numbers of fields {sorted(lengths)}"
            )
        width = lengths.pop()
        self.vocab: list[list[str]] = [sorted({f[i] for f in fields}) for i in range(width)]
        index = [{v: j for j, v in enumerate(vocab)} for vocab in self.vocab]
        self.tokens = np.array([[index[i][f[i]] for i in range(width)] for f in fields], dtype=np.int64)
        self._rows: dict[tuple[int, ...], int] = {}
        for row, tokens in enumerate(map(tuple, self.tokens.tolist())):
            if tokens in self._rows:
                raise DataError(
                    f"{name}: arch {self.archs[row]!r} appears twice (rows {self._rows[tokens]}, {row})"
                )
            self._rows[tokens] = row
        self._sizes = tuple(len(v) for v in self.vocab)
        self._masks: dict[tuple[int, ...], np.ndarray] = {}
        for tokens in self._rows:
            for position in range(width):
                prefix = tokens[:position]
                if prefix not in self._masks:
                    self._masks[prefix] = np.zeros(self._sizes[position], dtype=bool)
                self._masks[prefix][tokens[position]] = True
        self.devices = [c[4:] for c in self.frame.columns if str(c).startswith("lat_")]

    @classmethod
    def from_csv(cls, path: str | Path) -> TableSpace:
        """Read a benchmark CSV (``.csv`` or ``.csv.gz``)."""
        import pandas as pd

        path = Path(path)
        if not path.exists():
            raise DataError(f"benchmark table {path} not found; pass --table with the path of a CSV")
        return cls(pd.read_csv(path), name=path.name)

    # -- TokenSpace -------------------------------------------------------------------------------
    @property
    def sizes(self) -> tuple[int, ...]:
        return self._sizes

    def mask(self, position: int, prefix: Sequence[int]) -> np.ndarray:
        try:
            return self._masks[tuple(map(int, prefix[:position]))].copy()
        except KeyError:
            raise SpecError(f"prefix {list(prefix)} does not occur in {self.name}") from None

    def canonical(self, tokens: Sequence[int]) -> str:
        return self.archs[self.row(tokens)]

    # -- lookups ----------------------------------------------------------------------------------
    def row(self, tokens: Sequence[int]) -> int:
        """The table row of a token sequence."""
        try:
            return self._rows[tuple(map(int, tokens))]
        except KeyError:
            raise SpecError(f"tokens {list(tokens)} are not an architecture of {self.name}") from None

    def column(self, name: str) -> np.ndarray:
        if name not in self.frame.columns:
            raise DataError(
                f"{self.name}: no column {name!r}; columns are {', '.join(map(str, self.frame.columns))}"
            )
        return self.frame[name].to_numpy(dtype=np.float64)

    def latency(self, device: str) -> np.ndarray:
        if device not in self.devices:
            raise DataError(
                f"{self.name}: no latency for device {device!r}; devices: {', '.join(self.devices)}"
            )
        return self.column(f"lat_{device}")


@dataclass
class SearchTrace:
    """What one search did, in the order trials completed (each row of the table at most once)."""

    rows: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    target_ms: float = float("nan")
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def feasible(self) -> np.ndarray:
        """Strictly under the target, as the benchmark's constraint is defined."""
        return np.asarray(self.latency) < self.target_ms

    def best_feasible(self) -> np.ndarray:
        """Best feasible accuracy after each trial (NaN until the first feasible one)."""
        acc = np.where(self.feasible, np.asarray(self.accuracy), -np.inf)
        best = np.maximum.accumulate(acc) if len(acc) else acc
        return np.where(np.isfinite(best), best, np.nan)


def run_search(
    searcher: Searcher | Deduplicated,
    table: TableSpace,
    *,
    device: str,
    trials: int,
    target_ms: float | None = None,
    reward: str = "hard",
    accuracy: str = "cifar10_test",
    outstanding: int = 1,
    seed: int = 0,
    dedupe: bool = True,
    reward_params: dict[str, float] | None = None,
) -> SearchTrace:
    """Run ``trials`` trials of ``searcher`` over ``table``; ``target_ms`` defaults to the median latency.

    ``outstanding`` proposals are kept in flight and one of them, chosen at random, completes at each
    step, so searchers see rewards late and out of order as under Ray Tune. Each result carries the
    latency constraint (``feasibility.latency_constraint``: ``latency / target - 1``, ``<= 0`` meets the
    target), as a trial that measures latency before training knows it, and the accuracy (the objective
    reward models fit). ``trace.stats`` has the
    wrapper's counts (``explored``: proposals from the dedup fallback, not the searcher).
    """
    if outstanding < 1:
        raise SpecError(f"outstanding must be >= 1, got {outstanding}")
    acc = table.column(accuracy)
    lat = table.latency(device)
    target = float(np.median(lat)) if target_ms is None else float(target_ms)
    search = Deduplicated(searcher) if dedupe and isinstance(searcher, Searcher) else searcher
    rng = np.random.default_rng(seed)
    trace = SearchTrace(target_ms=target)
    in_flight = []
    while len(trace.rows) < trials:
        while len(in_flight) < outstanding and len(in_flight) + len(trace.rows) < trials:
            proposal = search.propose()
            if proposal is None:
                break
            in_flight.append(proposal)
        if not in_flight:
            raise GeonasError(f"{search.name} searcher proposed nothing while no trial was running")
        proposal = in_flight.pop(int(rng.integers(len(in_flight))))
        row = table.row(proposal.tokens)
        value = compute_reward(reward, acc[row], lat[row], target, **(reward_params or {}))
        # latency is measured before training (as stage 1 does): the searcher hears the constraint too,
        # and the accuracy the reward was computed from (a trial reports its mIoU)
        search.observe(proposal.id, value, constraint=latency_constraint(float(lat[row]), target),
                       objective=float(acc[row]))
        trace.rows.append(row)
        trace.accuracy.append(float(acc[row]))
        trace.latency.append(float(lat[row]))
        trace.reward.append(value)
    if isinstance(search, Deduplicated):
        trace.stats = dict(search.stats)
    return trace
