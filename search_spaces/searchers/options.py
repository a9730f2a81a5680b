"""Each searcher's options as a typed model: what ``searcher.options`` may hold, checked at the door.

The models import without torch or Optuna, so the API validates ``{name: ppo, options: {lrr: 0.1}}``
before anything is stored (a 422 at ``searcher.options.lrr``), and :func:`~.base.create_searcher` checks
the same models wherever a searcher is built. A searcher registers with its model
(``@register_searcher("ppo", options=PPOOptions)``), and registration refuses a model whose fields
and defaults differ from the searcher's keyword arguments, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "SearcherOptions",
    "RandomOptions",
    "PPOOptions",
    "TPEOptions",
    "GPOptions",
    "EvolutionOptions",
    "OPTIONS",
    "options_model",
    "check_options",
]


class SearcherOptions(BaseModel):
    """Options every searcher takes."""

    model_config = ConfigDict(extra="forbid")

    failure_reward: float | None = Field(
        None, description="Reward a failed trial counts as; default the lowest reward observed so far."
    )


class RandomOptions(SearcherOptions):
    """Random search learns nothing: only the shared options."""


class EvolutionOptions(SearcherOptions):
    population_size: int = Field(50, ge=1, description="Random architectures first, then the population kept.")
    sample_size: int = Field(10, ge=1, description="Tournament size: the best of this many becomes a parent.")

    @model_validator(mode="after")
    def _tournament_fits(self) -> EvolutionOptions:
        if self.sample_size > self.population_size:
            raise ValueError(
                f"sample_size ({self.sample_size}) must be at most population_size ({self.population_size})"
            )
        return self


class TPEOptions(SearcherOptions):
    """Optuna's ``TPESampler`` arguments that make sense here (passed through)."""

    n_startup_trials: int = Field(10, ge=0, description="Random trials before the model is used.")
    n_ei_candidates: int = Field(24, ge=1)
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = False
    consider_endpoints: bool = False
    prior_weight: float = Field(1.0, gt=0)


class GPOptions(SearcherOptions):
    """Optuna's ``GPSampler`` arguments (passed through); the latency constraint is used where trials report it."""

    n_startup_trials: int = Field(10, ge=0, description="Random trials before the model is used.")
    deterministic_objective: bool = Field(False, description="Rewards have no noise (a tabular benchmark).")


class PPOOptions(SearcherOptions):
    """The PPO controller's hyper-parameters (see :mod:`search_spaces.searchers.ppo` for what each does)."""

    hidden: int = Field(64, ge=1)
    embed: int = Field(32, ge=1)
    controller: Literal["lstm", "factorised"] = "lstm"
    lr: float = Field(1e-2, gt=0, lt=1)
    batch_size: int = Field(10, ge=1, description="Rewards per policy update.")
    ppo_epochs: int = Field(4, ge=1)
    clip: float = Field(0.2, gt=0)
    entropy_coef: float = Field(1e-3, ge=0)
    entropy_decay: float = Field(1.0, gt=0, le=1)
    advantage: Literal["rank", "zscore", "baseline"] = "rank"
    baseline_decay: float = Field(0.95, ge=0, lt=1)
    replay: int = Field(0, ge=0)
    temperature: float = Field(1.0, gt=0)
    logit_clip: float | None = Field(None, gt=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_pending: int | None = Field(None, ge=1)
    risk_epsilon: float | None = Field(0.3, gt=0, le=1)
    elite: int = Field(10, ge=0)
    sil_coef: float = Field(1.0, ge=0)
    sample_ahead: int = Field(32, ge=1)
    grow_refill: bool = True
    resample_passes: int = Field(2, ge=0)
    without_replacement: bool = False
    restart_after: int | None = Field(
        100, ge=1, description="Architectures without a better reward before a fresh controller."
    )
    pool_draws: int = Field(64, ge=0, description="Policy draws in each proposal's pool (0: no reward model).")
    pool_neighbours: int = Field(10, ge=0, description="Best architectures whose one-edit neighbours join the pool.")
    pool_two_edit: int = Field(
        1, ge=0, description="Best architectures whose two-edit neighbours (every pair of changes) join the pool."
    )
    prior_weight: float = Field(0.1, ge=0, description="Weight of log pi(x), the policy's prior, in the pool's score.")
    explore: float = Field(
        0.0, ge=0, le=1, description="Share of proposals that are plain policy draws while the model is ready."
    )
    pool_random: int = Field(0, ge=0, description="Uniform architectures of the space added to each pool.")
    ei_xi: float = Field(0.0, ge=0, description="Margin over the best reward that EI measures improvement from.")
    restart_model: bool = Field(True, description="A controller restart starts the reward model afresh too.")
    model_min_points: int = Field(10, ge=3)
    model_min_quality: float = 0.2


#: searcher name -> its options model; ``register_searcher`` checks each searcher against its entry
OPTIONS: dict[str, type[SearcherOptions]] = {
    "random": RandomOptions,
    "ppo": PPOOptions,
    "tpe": TPEOptions,
    "gp": GPOptions,
    "regularized_evolution": EvolutionOptions,
}


def options_model(name: str) -> type[SearcherOptions]:
    """The options model of the searcher called ``name`` (a ``KeyError`` names the valid ones)."""
    try:
        return OPTIONS[name]
    except KeyError:
        raise KeyError(f"unknown searcher {name!r}; valid searchers: {', '.join(sorted(OPTIONS))}") from None


def check_options(name: str, options: dict[str, Any], model: type[SearcherOptions] | None = None) -> SearcherOptions:
    """Validate ``options`` for searcher ``name`` (against ``model``, default its entry in :data:`OPTIONS`);
    an unknown key's error lists the searcher's options.

    Raises pydantic's ``ValidationError`` with each error at the option's name, so inside a spec
    the location reads ``searcher.options.<key>``.
    """
    model = model or options_model(name)
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        valid = ", ".join(model.model_fields)
        errors = [
            {
                "type": PydanticCustomError(
                    "unknown_option",
                    "searcher {searcher} has no option '{option}'; its options: {valid}",
                    {"searcher": name, "option": str(e["loc"][-1]), "valid": valid},
                ),
                "loc": e["loc"],
                "input": e["input"],
            }
            if e["type"] == "extra_forbidden"
            else e
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, errors) from None
