"""Stage 1 on the cluster: the Ray Tune runs of the searched architectures and of the baselines.

The driver hands over the trial (:func:`trial_trainable`: :func:`trainers.stage1.stage1_trainable` bound
to its context), the searcher behind its Tune adapter (:func:`searcher_adapter`, restored from its last
saved state when the driver resumes) and its own callbacks, which write to the store. This module sizes
the runs to the cluster (:func:`trial_resources`, :func:`concurrency`), names them per driver attempt
(:func:`run_name`) and saves the searcher after every trial (:func:`run_search`), so a resumed driver
goes on where the last one stopped. What a trial event says (:func:`trial_arch`, :func:`trial_result`,
:func:`trial_error`) is read here; the driver's callback writes it to the store. Nothing here imports
torch or Ray at import time: the driver imports this module.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

from search_spaces.errors import GeonasError

from .meter import METER_CPUS

__all__ = [
    "chip_size",
    "trial_arch",
    "trial_result",
    "json_safe",
    "trial_error",
    "trial_resources",
    "concurrency",
    "searcher_adapter",
    "trial_trainable",
    "run_name",
    "run_search",
    "run_baselines",
]


def chip_size(split) -> int:
    """Chip size in pixels from the first readable chip (a corrupt one is the trials' to report)."""
    from .datasets import ChipError

    for index in range(min(len(split), 20)):
        try:
            return int(split[index][0].shape[-1])
        except ChipError:
            continue
    raise GeonasError(f"none of the first chips of {split!r} can be read; check the dataset")


def trial_arch(config: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(architecture, its hash) that a Tune trial's config describes: a searched architecture, a baseline
    on its backbone, or (None, None)."""
    from .stage1 import descriptor_key

    if "arch" in config:
        return config["arch"], descriptor_key(config)[1]
    if "baseline" in config:
        return {"baseline": config["baseline"], "backbone": config["backbone"]}, descriptor_key(config)[1]
    return None, None


HISTORY_KEYS = ("epoch", "miou", "loss", "reward", "train_s", "eval_s", "latency_s", "chips_per_s", "iou")


def trial_result(result: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(trial fields, history entry) of a stage-1 Tune result: the epoch's numbers as the trial's latest,
    and what the trial's history keeps of the epoch; ``({}, None)`` when there is no result."""
    if not result:
        return {}, None
    fields = dict(
        epoch=int(result.get("epoch", 0)),
        miou=result.get("miou"),
        latency_ms=result.get("latency_ms"),
        latency_device=result.get("latency_device"),
        params=result.get("params"),
        reward=result.get("reward"),
        node_id=result.get("node_id"),
    )
    return fields, {k: json_safe(result.get(k)) for k in HISTORY_KEYS}


def json_safe(value: Any) -> Any:
    """NaN and ±inf as None (a diverged trial's loss): PostgreSQL's JSON refuses them, JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def trial_error(trial) -> str:
    """The last line of the trial's exception, e.g. ``DataError: chip ... is unreadable``."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "trial failed")[:2000]


def trial_resources(cpus_per_trial: float) -> dict[str, float]:
    """``cpus_per_trial`` CPUs per trial (the spec's); one GPU per trial when the cluster has GPUs."""
    import ray

    resources = {"cpu": cpus_per_trial}
    if ray.cluster_resources().get("GPU", 0) >= 1:
        resources["gpu"] = 1
    return resources


def concurrency(wanted: int, resources: dict[str, float]) -> int:
    """The spec's concurrency (``wanted``), capped by how many trials the cluster can hold at once.

    When no node offers the ``latency_meter`` resource, the meter holds CPUs of its own, which
    trials cannot use (otherwise a trial could wait forever for a meter that cannot be placed).
    """
    import ray

    from search_spaces.latency.meter import LATENCY_RESOURCE

    total = ray.cluster_resources()
    cpus = total.get("CPU", 1) - (0 if total.get(LATENCY_RESOURCE, 0) >= 1 else METER_CPUS)
    fits = int(max(cpus, resources["cpu"]) // resources["cpu"])
    if "gpu" in resources:
        fits = min(fits, int(total.get("GPU", 0)))
    return max(1, min(wanted, fits))


def searcher_adapter(
    space, name: str, seed: int, options: dict[str, Any], state_path: Path,
    target_ms: float | None = None, margin: float = 0.0, screen: int = 0,
):
    """(Tune adapter, number of proposals re-run first or None): the searcher ``name`` over ``space``
    behind :class:`~search_spaces.searchers.tune.TuneAdapter`, restored from ``state_path`` when a
    previous driver saved it there; the proposals that were in flight then are queued again.

    With a latency target, every finished trial also tells the searcher its latency constraint
    (:func:`search_spaces.feasibility.result_constraint`): PPO's pool and Optuna's GP model which
    architectures keep the target from it. Every trial tells it its mIoU too, the objective the reward
    was computed from: reward models (PPO's pool, ``screen``) fit it apart from the constraint.
    ``screen > 0`` wraps the searcher in :class:`~search_spaces.searchers.screening.Screened` with a pool
    of that many of its proposals."""
    from search_spaces.feasibility import result_constraint
    from search_spaces.searchers import create_searcher
    from search_spaces.searchers.tune import TuneAdapter, finite_metric

    searcher = create_searcher(name, space, seed=seed, **options)
    if screen:
        from search_spaces.searchers.screening import Screened

        searcher = Screened(searcher, pool=screen)
    constraint = None if target_ms is None else partial(result_constraint, target_ms=target_ms, margin=margin)
    adapter = TuneAdapter(searcher, to_config=lambda tokens: {"arch": space.decode(tokens).to_dict()},
                          constraint_fn=constraint, objective_fn=partial(finite_metric, key="miou"))
    if not state_path.exists():
        return adapter, None
    adapter.restore(str(state_path))
    return adapter, adapter.requeue_pending()


def trial_trainable(context, resources: dict[str, float]):
    """The stage-1 trial as a Tune trainable: bound to the experiment's context, holding ``resources``."""
    from ray import tune

    from .stage1 import stage1_trainable

    return tune.with_resources(tune.with_parameters(stage1_trainable, context=context), resources)


def _searcher_checkpoint_class():
    from ray.tune import Callback

    class SearcherCheckpoint(Callback):
        """Saves the searcher (weights, optimiser, RNG, in-flight proposals) after every finished trial.

        Tune informs the search algorithm before its callbacks, so the file always includes the
        result just observed; it is written atomically (temp file + rename) by the adapter.
        """

        def __init__(self, adapter, path: Path) -> None:
            self.adapter, self.path = adapter, path

        def on_trial_start(self, iteration, trials, trial, **info):
            self.adapter.save(str(self.path))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.adapter.save(str(self.path))

        def on_trial_error(self, iteration, trials, trial, **info):
            self.adapter.save(str(self.path))

    return SearcherCheckpoint


def run_name(storage: str, experiment_id: str) -> str:
    """A fresh Tune run name per driver attempt: ``experiment-ID``, then ``experiment-ID-a2``, …"""
    base = f"experiment-{experiment_id}"
    if "://" in storage or not (Path(storage) / base).exists():
        return base
    attempt = 2
    while (Path(storage) / f"{base}-a{attempt}").exists():
        attempt += 1
    return f"{base}-a{attempt}"


def run_search(
    trainable,
    adapter,
    *,
    num_samples: int,
    max_concurrent: int,
    scheduler,
    time_budget_s: float | None,
    name: str,
    storage: str,
    callbacks: list,
    max_failures: int,
    state_path: Path,
) -> None:
    """Run ``num_samples`` searched trials as one Tune run; the searcher is saved to ``state_path``
    whenever a trial starts or ends (after ``callbacks``, which see every trial event first)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    SearcherCheckpoint = _searcher_checkpoint_class()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(adapter, max_concurrent=max_concurrent),
            scheduler=scheduler,
            num_samples=num_samples,
            time_budget_s=time_budget_s,
            reuse_actors=True,  # a new worker process per trial costs seconds; the trainable resets itself
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[*callbacks, SearcherCheckpoint(adapter, state_path)],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    tuner.fit()


def run_baselines(
    trainable,
    baselines: list[str],
    backbone: str,
    *,
    max_concurrent: int,
    name: str,
    storage: str,
    callbacks: list,
    max_failures: int,
) -> None:
    """Train each baseline on ``backbone`` as one trial of a grid-search Tune run."""
    from ray import tune

    baseline_tuner = tune.Tuner(
        trainable,
        param_space={"baseline": tune.grid_search(baselines), "backbone": backbone},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=0,
        ),
    )
    baseline_tuner.fit()
