"""The aggregates a metrics scrape reads: states counted per table and finished trials' durations."""

from __future__ import annotations

from sqlalchemy import case, func, select

from ..states import TERMINAL
from .core import StoreCore
from .schema import Experiment, PretrainingJob, Trial

__all__ = ["Metrics"]


class Metrics(StoreCore):
    def state_counts(self) -> dict[str, dict[str, int]]:
        """Experiments, trials and pretraining jobs by state (one GROUP BY each)."""
        out: dict[str, dict[str, int]] = {}
        with self.session() as s:
            for key, table in (("experiments", Experiment), ("trials", Trial), ("pretraining", PretrainingJob)):
                out[key] = dict(s.execute(select(table.state, func.count()).group_by(table.state)).all())
        return out

    def trial_durations(self) -> list[float]:
        """Seconds from creation to the last update of every finished trial."""
        with self.session() as s:
            rows = s.execute(
                select(Trial.created_at, Trial.updated_at).where(Trial.state.in_([str(x) for x in TERMINAL]))
            )
            return [max((end - start).total_seconds(), 0.0) for start, end in rows]

    def trial_duration_histogram(self, bounds: tuple[float, ...]) -> tuple[list[int], int, float]:
        """Cumulative counts of finished trials' durations at each bound, the count and the sum, in one
        aggregate query (a scrape must not load every trial into Python)."""
        if self.engine.dialect.name == "sqlite":
            seconds = (func.julianday(Trial.updated_at) - func.julianday(Trial.created_at)) * 86400.0
        else:
            seconds = func.extract("epoch", Trial.updated_at - Trial.created_at)
        columns = [func.count(), func.coalesce(func.sum(seconds), 0.0)]
        columns += [func.coalesce(func.sum(case((seconds <= bound, 1), else_=0)), 0) for bound in bounds]
        with self.session() as s:
            row = s.execute(select(*columns).where(Trial.state.in_([str(x) for x in TERMINAL]))).one()
        return [int(n) for n in row[2:]], int(row[0]), float(row[1])
