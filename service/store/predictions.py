"""Prediction jobs: create, read, list, update through the transition check, reopen for resume, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from search_spaces.errors import NotFound

from ..states import State
from .core import StoreCore
from .schema import PredictionJob, new_id

__all__ = ["Predictions"]


class Predictions(StoreCore):
    def create_prediction(
        self, name: str, model_id: str, spec: dict[str, Any], owner: str | None = None
    ) -> PredictionJob:
        with self.session() as s:
            job = PredictionJob(
                id=new_id(), name=name, model_id=model_id, spec=spec, state=State.PENDING, progress={}, scenes=[],
                owner=owner,
            )  # fmt: skip
            s.add(job)
        return job

    def get_prediction(self, prediction_id: str) -> PredictionJob:
        with self.session() as s:
            job = s.get(PredictionJob, prediction_id)
            if job is None:
                raise NotFound(f"prediction job {prediction_id} does not exist; list them with GET /v1/predictions")
            return job

    def list_predictions(self, limit: int = 100, owner: str | None = None) -> list[PredictionJob]:
        with self.session() as s:
            query = select(PredictionJob).order_by(PredictionJob.created_at.desc()).limit(limit)
            if owner is not None:
                query = query.where(PredictionJob.owner == owner)
            return list(s.scalars(query))

    def update_prediction(self, prediction_id: str, *, state: str | None = None, **fields: Any) -> PredictionJob:
        """Update a prediction job (``fields``: ``job_id``, ``progress``, ``scenes``, ``mosaic``, ``error``…)."""
        return self._update(PredictionJob, "prediction job", prediction_id, state, fields)

    def reopen_prediction(self, prediction_id: str) -> PredictionJob:
        """Back to ``pending`` for a resumed run (any state: finished scenes are skipped by the job)."""
        with self.session() as s:
            job = s.get(PredictionJob, prediction_id)
            if job is None:
                raise NotFound(f"prediction job {prediction_id} does not exist")
            job.state, job.error = State.PENDING, None
            return job

    def delete_prediction(self, prediction_id: str) -> None:
        with self.session() as s:
            job = s.get(PredictionJob, prediction_id)
            if job is not None:
                s.delete(job)
