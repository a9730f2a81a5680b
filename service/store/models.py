"""Fine-tuned models: registered once per (experiment, trial), read and listed best first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from search_spaces.errors import NotFound

from .core import StoreCore
from .schema import Experiment, Model, new_id

__all__ = ["Models"]


class Models(StoreCore):
    def register_model(self, experiment_id: str, **fields: Any) -> Model:
        """Register a fine-tuned model once per (experiment, trial): a re-run driver updates it."""
        with self.session() as s:
            existing = s.scalars(
                select(Model).where(Model.experiment_id == experiment_id, Model.trial_id == fields.get("trial_id"))
            ).first()
            model = existing or Model(id=new_id(), experiment_id=experiment_id)
            if model.owner is None:  # a model belongs to whoever owns its experiment
                model.owner = s.scalar(select(Experiment.owner).where(Experiment.id == experiment_id))
            for key, value in fields.items():
                setattr(model, key, value)
            s.add(model)
            return model

    def get_model(self, model_id: str) -> Model:
        with self.session() as s:
            model = s.get(Model, model_id)
            if model is None:
                raise NotFound(f"model {model_id} does not exist; list them with GET /v1/models")
            return model

    def list_models(self, experiment_id: str | None = None, limit: int = 100, owner: str | None = None) -> list[Model]:
        with self.session() as s:
            query = select(Model)
            if experiment_id is not None:
                query = query.where(Model.experiment_id == experiment_id)
            if owner is not None:
                query = query.where(Model.owner == owner)
            return list(s.scalars(query.order_by(Model.miou.desc()).limit(limit)))
