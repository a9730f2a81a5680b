"""CSF pretraining jobs: create, read, list, update through the transition check, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from search_spaces.errors import NotFound

from ..states import State
from .core import StoreCore
from .schema import PretrainingJob, new_id

__all__ = ["Pretraining"]


class Pretraining(StoreCore):
    def create_pretraining(self, name: str, spec: dict[str, Any], owner: str | None = None) -> PretrainingJob:
        with self.session() as s:
            job = PretrainingJob(id=new_id(), name=name, spec=spec, state=State.PENDING, loss_curve=[], owner=owner)
            s.add(job)
        return job

    def get_pretraining(self, job_id: str) -> PretrainingJob:
        with self.session() as s:
            job = s.get(PretrainingJob, job_id)
            if job is None:
                raise NotFound(f"pretraining job {job_id} does not exist; list them with GET /v1/pretraining")
            return job

    def list_pretraining(self, limit: int = 100, owner: str | None = None) -> list[PretrainingJob]:
        with self.session() as s:
            query = select(PretrainingJob).order_by(PretrainingJob.created_at.desc()).limit(limit)
            if owner is not None:
                query = query.where(PretrainingJob.owner == owner)
            return list(s.scalars(query))

    def update_pretraining(self, pretraining_id: str, *, state: str | None = None, **fields: Any) -> PretrainingJob:
        """Update a pretraining job (``fields`` may include ``job_id``, the Ray Job's id)."""
        return self._update(PretrainingJob, "pretraining job", pretraining_id, state, fields)

    def delete_pretraining(self, job_id: str) -> None:
        with self.session() as s:
            job = s.get(PretrainingJob, job_id)
            if job is not None:
                s.delete(job)
