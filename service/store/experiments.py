"""Experiments: create, read, list, update, reopen for resume, delete, and the owner lookup of the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from search_spaces.errors import NotFound

from ..states import State
from .core import StoreCore, fetch_first
from .schema import Experiment, new_id

__all__ = ["Experiments"]

_OWNER_QUERY = select(Experiment.owner).where(Experiment.id == bindparam("id"))


class Experiments(StoreCore):
    def create_experiment(self, name: str, spec: dict[str, Any], owner: str | None = None) -> Experiment:
        with self.session() as s:
            exp = Experiment(id=new_id(), name=name, spec=spec, state=State.PENDING, owner=owner)
            s.add(exp)
        return exp

    def get_experiment(self, experiment_id: str) -> Experiment:
        with self.session() as s:
            exp = s.get(Experiment, experiment_id)
            if exp is None:
                raise NotFound(f"experiment {experiment_id} does not exist; list them with GET /v1/experiments")
            return exp

    def list_experiments(self, limit: int = 100, offset: int = 0, owner: str | None = None) -> list[Experiment]:
        """Newest first; ``owner`` limits to one user's (None: everyone's, for admins)."""
        with self.session() as s:
            query = select(Experiment)
            if owner is not None:
                query = query.where(Experiment.owner == owner)
            rows = s.scalars(query.order_by(Experiment.created_at.desc()).limit(limit).offset(offset))
            return list(rows)

    def update_experiment(self, experiment_id: str, *, state: str | None = None, **fields: Any) -> Experiment:
        return self._update(Experiment, "experiment", experiment_id, state, fields)

    def reopen_experiment(self, experiment_id: str, spec: dict[str, Any]) -> Experiment:
        """Put a stopped experiment back to pending (for resume) with its possibly larger spec.

        The one transition out of a terminal state, kept here so nothing else can do it.
        """
        with self.session() as s:
            exp = s.get(Experiment, experiment_id)
            if exp is None:
                raise NotFound(f"experiment {experiment_id} does not exist")
            exp.state, exp.spec, exp.error = State.PENDING, spec, None
            return exp

    def delete_experiment(self, experiment_id: str) -> None:
        """Remove an experiment that never started (used when its job could not be submitted)."""
        with self.session() as s:
            exp = s.get(Experiment, experiment_id)
            if exp is not None:
                s.delete(exp)

    def experiment_owner(self, experiment_id: str) -> str | None:
        """The experiment's owner (None: made with auth off); NotFound when it does not exist."""
        row = self._read(_OWNER_QUERY, {"id": experiment_id}, fetch_first)
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist; list them with GET /v1/experiments")
        return row[0]
