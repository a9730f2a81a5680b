"""The experiment driver: what a Ray Job runs for one experiment, read top to bottom as its pipeline.

``python -m service.driver EXPERIMENT_ID`` loads the experiment from the store and runs
:func:`run_experiment`: stage 1 (:func:`run_stage1`: a Ray Tune search, the searcher behind
:class:`~search_spaces.searchers.tune.TuneAdapter`, then the baselines), the selection of the top models
(:func:`stage2_candidates`), and for each of them stage 2, export and registration (:func:`run_stage2`).
How each stage runs lives in ``trainers/`` (``search``, ``stage2``, ``export``, ``registration``); the
driver turns the spec into their inputs and writes every result to the store as it arrives. The API
process never trains; this process never serves HTTP.
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path
from typing import Any

from search_spaces.errors import Conflict, GeonasError
from trainers.meter import (
    METER_CPUS,
    measure_baseline,
    measure_space,
    remeasure_latency,  # noqa: F401 - imported from here by tests/test_stage_handoff.py
    start_latency_meter,
)
from trainers.search import (
    chip_size,
    concurrency,
    run_baselines,
    run_name,
    run_search,
    searcher_adapter,
    trial_resources,
    trial_trainable,
)

from .specs import ExperimentSpec
from .states import State
from .store import Store, get_store

log = logging.getLogger("geonas.driver")

__all__ = ["main", "run_experiment", "run_stage1", "run_stage2", "stage2_candidates", "every_trial_failed"]


def _store_callback_class():
    from ray.tune import Callback

    from trainers.search import trial_arch, trial_error, trial_result

    class StoreCallback(Callback):
        """Writes each Tune trial event to the store, idempotently (keyed by experiment + Tune trial id)."""

        def __init__(self, database_url: str, experiment_id: str, kind: str = "searched") -> None:
            # Tune pickles its callbacks with the experiment state: hold the URL, not the engine.
            self.database_url, self.experiment_id, self.kind = database_url, experiment_id, kind

        @property
        def store(self) -> Store:
            return get_store(self.database_url)

        def _id(self, trial) -> str:
            return f"{self.experiment_id}-{trial.trial_id}"

        def _write(self, trial, state: str, result: dict[str, Any] | None = None, error: str | None = None):
            arch, arch_hash = trial_arch(trial.config)
            fields, history = trial_result(result)
            if error is not None:
                fields["error"] = error
            try:
                self.store.record_trial(
                    self._id(trial),
                    self.experiment_id,
                    state=state,
                    kind=self.kind,
                    arch=arch,
                    arch_hash=arch_hash,
                    history_entry=history,
                    **fields,
                )
            except Conflict as exc:  # a late event for a finished trial: the store keeps the first
                log.warning("%s", exc)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._write(trial, State.RUNNING)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._write(trial, State.RUNNING, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            state = State.PRUNED if result.get("pruned") else State.COMPLETED
            self._write(trial, state, result)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._write(trial, State.FAILED, trial.last_result or None, error=trial_error(trial))

        def on_trial_recover(self, iteration, trials, trial, **info):
            # retried from its last checkpoint: the reason stays on the trial even when the retry succeeds
            self._write(trial, State.RUNNING, error=f"retried after: {trial_error(trial)}")

    return StoreCallback


def _build_context(spec: ExperimentSpec, storage: str, backbone_weights: str | None, experiment_id: str):
    from trainers.datasets import DatasetInfo, SegmentationDataset
    from trainers.stage1 import LatencySettings, Stage1Context
    from trainers.trial_data import SplitRef

    info = DatasetInfo.load(spec.dataset.path)
    bands = tuple(spec.dataset.bands) if spec.dataset.bands else None
    # trials load their chips themselves (once per node); the driver reads one chip for the shapes
    train = SplitRef(str(info.root), "train", bands, spec.stage1.subset, spec.seed)
    val = SplitRef(str(info.root), "val", bands, spec.stage1.val_subset, spec.seed)
    probe = SegmentationDataset(info.root, "train", bands=list(bands) if bands else None, preload=False)
    chip = chip_size(probe)
    latency = LatencySettings(
        profile=spec.latency.device,
        target_ms=spec.latency.target_ms,
        reward=spec.latency.reward,
        margin=spec.latency.margin,
        batch_size=spec.latency.batch_size,
        tile_size=spec.latency.tile_size,
        cache_path=str(Path(storage) / "latency-cache.sqlite") if "://" not in storage else None,
        meter=True,
        meter_cpus=METER_CPUS,
        harness={"max_seconds": spec.latency.max_seconds},
    )
    return Stage1Context(
        train=train,
        val=val,
        in_chans=probe.in_chans,
        num_classes=probe.num_classes,
        chip_size=chip,
        ignore_index=probe.ignore_index,
        epochs=spec.stage1.epochs,
        batch_size=spec.stage1.batch_size,
        lr=spec.stage1.lr,
        seed=spec.seed,
        latency=latency,
        backbone_weights=backbone_weights,
        threads=max(1, int(spec.stage1.cpus_per_trial)),
        quarantine=str(Path(storage) / f"experiment-{experiment_id}.quarantine") if "://" not in storage else None,
        weights_dir=str(Path(storage) / f"experiment-{experiment_id}.weights") if "://" not in storage else None,
    )


def resolve_backbone(spec: ExperimentSpec, store: Store) -> tuple[str, str | None]:
    """(timm name, weights file or None): a ``{csf: id}`` backbone is that job's exported encoder."""
    if isinstance(spec.backbone, str):
        return spec.backbone, None
    job = store.get_pretraining(spec.backbone.csf)
    if job.state != State.COMPLETED or not job.artifact:
        raise GeonasError(f"pretraining job {job.id} is {job.state}; its encoder is not available")
    return str((job.encoder or {})["backbone"]), job.artifact


def search_space_config(spec: ExperimentSpec, backbone: str | None = None):
    from search_spaces.nasfpn import SearchSpaceConfig

    s = spec.search_space
    if backbone is None:
        backbone = spec.backbone if isinstance(spec.backbone, str) else spec.backbone.csf
    backbones = [backbone] if not isinstance(spec.backbone, str) else (s.backbones or [backbone])
    return SearchSpaceConfig(
        backbones=tuple(backbones),
        levels=tuple(s.levels),
        num_cells=tuple(s.num_cells) if isinstance(s.num_cells, list) else (s.num_cells,),
        channels=tuple(s.channels) if isinstance(s.channels, list) else (s.channels,),
        ops=tuple(s.ops),
    )


def resolve_relative_target(
    spec: ExperimentSpec, experiment_id: str, store: Store, context, meter, backbone: str
) -> ExperimentSpec:
    """``latency.target_ratio`` x the baseline's latency (or the median of uniform draws of the search
    space: ``relative_to: space``), measured now by the experiment's meter on the trials' input shape,
    stored in the experiment's spec as ``target_ms`` (so stage 1, stage 2, the leaderboard and a
    resumed driver all read the same number)."""
    lat = spec.latency
    if lat.relative_to == "space":
        from search_spaces.nasfpn import NasFpnSpace

        space = NasFpnSpace(search_space_config(spec, backbone))
        measured = measure_space(meter, context, space, seed=spec.seed)
    else:
        measured = measure_baseline(meter, context, lat.relative_to, backbone)
    target = round(lat.target_ratio * float(measured["median_ms"]), 4)
    raw = copy.deepcopy(store.get_experiment(experiment_id).spec)  # as submitted, plus the resolved target
    raw.setdefault("latency", {})["target_ms"] = target
    store.update_experiment(experiment_id, spec=raw)
    log.info(
        "latency target %.3f ms = %s x the %s's %.3f ms on %s",
        target, lat.target_ratio, lat.relative_to, measured["median_ms"], lat.device,
    )
    return ExperimentSpec.model_validate(raw)


def early_stopping(spec: ExperimentSpec):
    from trainers.early_stopping import make_scheduler

    s = spec.stage1
    return make_scheduler(s.early_stopping, s.early_stopping_metric, s.epochs, s.grace_period, s.reduction_factor)


def run_experiment(experiment_id: str, store: Store, storage: str) -> None:
    """Run (or resume) one experiment: stage 1, baselines, selection, stage 2, export, registration.

    Resuming is the same call: completed trials stay in the store and count against the budget, the
    searcher is restored from its last saved state, and the proposals that were in flight when the
    previous driver stopped are trained again first, so the experiment ends with exactly its
    budgeted number of finished trials and no architecture trained twice.
    """
    import ray

    exp = store.get_experiment(experiment_id)
    spec = ExperimentSpec.model_validate(exp.spec)
    store.update_experiment(experiment_id, state=State.RUNNING, error=None)
    if not ray.is_initialized():
        ray.init(log_to_driver=False)

    backbone_name, backbone_weights = resolve_backbone(spec, store)
    context = _build_context(spec, storage, backbone_weights, experiment_id)
    meter = start_latency_meter(context)  # owned by this driver, so it outlives every trial
    if spec.latency.target_ms is None and spec.latency.target_ratio is not None:
        spec = resolve_relative_target(spec, experiment_id, store, context, meter, backbone_name)
        context = _build_context(spec, storage, backbone_weights, experiment_id)
    run_stage1(spec, experiment_id, store, storage, context, backbone_name)
    failure = every_trial_failed(store.list_trials(experiment_id, stage=1))
    if failure is not None:  # the job's entrypoint records it: the experiment ends failed, not completed
        raise GeonasError(failure)
    run_stage2(spec, experiment_id, store, storage, context)
    store.update_experiment(experiment_id, state=State.COMPLETED)


def run_stage1(
    spec: ExperimentSpec, experiment_id: str, store: Store, storage: str, context, backbone_name: str
) -> None:
    """Stage 1: the search (the spec's budget less the searched trials already finished), then the
    requested baselines not yet completed; every trial event goes to the store as it happens."""
    from search_spaces.nasfpn import NasFpnSpace

    space = NasFpnSpace(search_space_config(spec, backbone_name))
    state_path = Path(storage) / f"experiment-{experiment_id}.searcher.pkl"
    adapter, replayed = searcher_adapter(
        space, spec.searcher.name, spec.seed, spec.searcher.options, state_path,
        target_ms=context.latency.target_ms, margin=context.latency.margin, screen=spec.searcher.screen,
    )
    if replayed is not None:
        log.info("resumed searcher state from %s; %d in-flight proposals re-run first", state_path, replayed)
    store.interrupt_open_trials(experiment_id, "interrupted when its driver stopped; re-run on resume")
    remaining = spec.budget.trials - store.count_finished(experiment_id, stage=1, kind="searched")

    resources = trial_resources(spec.stage1.cpus_per_trial)
    trainable = trial_trainable(context, resources)
    StoreCallback = _store_callback_class()
    if remaining > 0:
        run_search(
            trainable,
            adapter,
            num_samples=remaining,
            max_concurrent=concurrency(spec.budget.concurrency, resources),
            scheduler=early_stopping(spec),
            time_budget_s=spec.budget.wall_time_s,
            name=run_name(storage, experiment_id),
            storage=storage,
            callbacks=[StoreCallback(store.url, experiment_id)],
            max_failures=spec.stage1.max_failures,
            state_path=state_path,
        )

    done_baselines = {
        t.arch["baseline"]
        for t in store.list_trials(experiment_id, stage=1)
        if t.kind == "baseline" and t.state == State.COMPLETED and t.arch
    }
    baselines = [b for b in spec.baselines if b not in done_baselines]
    if baselines:
        run_baselines(
            trainable,
            baselines,
            space.config.backbones[0],
            max_concurrent=concurrency(spec.budget.concurrency, resources),
            name=run_name(storage, experiment_id) + "-baselines",
            storage=storage,
            callbacks=[StoreCallback(store.url, experiment_id, kind="baseline")],
            max_failures=spec.stage1.max_failures,
        )


def every_trial_failed(trials: list) -> str | None:
    """Why stage 1 produced nothing, when every one of its trials failed (else None): the count and
    the first trial's error, which usually names the cause (a backbone, a band, a chip)."""
    if not trials or any(t.state != State.FAILED for t in trials):
        return None
    first = next((t.error for t in trials if t.error), "no error was recorded")
    return f"every stage-1 trial failed ({len(trials)} of {len(trials)}); the first: {first}"


def stage2_candidates(spec: ExperimentSpec, trials: list) -> list:
    """The top-k searched architectures by reward (distinct) that meet the latency target by the same
    rule stage 1 pruned with (``search_spaces.feasibility``), then every requested baseline."""
    from search_spaces.feasibility import within_target

    target = spec.latency.target_ms
    hard = spec.latency.reward == "hard" and target is not None

    def feasible(t) -> bool:
        return not hard or within_target(t.latency_ms, target, spec.latency.margin)

    done = [t for t in trials if t.stage == 1 and t.state == State.COMPLETED and t.reward is not None]
    searched, seen = [], set()
    for t in sorted((t for t in done if t.kind == "searched" and feasible(t)), key=lambda t: -t.reward):
        if t.arch_hash not in seen:
            seen.add(t.arch_hash)
            searched.append(t)
    baselines = [t for t in done if t.kind == "baseline"]
    return searched[: spec.stage2.top_k] + (baselines if spec.stage2.top_k else [])


def run_stage2(spec: ExperimentSpec, experiment_id: str, store: Store, storage: str, context) -> None:
    """Fine-tune, evaluate, re-measure, export and register each stage-2 candidate."""
    from trainers.export import export_model
    from trainers.loop import free_threads_per_worker
    from trainers.registration import registration
    from trainers.stage2 import FinetuneConfig, finetune_candidate, stage1_init

    meter = start_latency_meter(context)  # the stage-1 meter, or a new one when resuming at stage 2
    finished = {t.arch_hash for t in store.list_trials(experiment_id, stage=2) if t.state == State.COMPLETED}
    for trial in stage2_candidates(spec, store.list_trials(experiment_id, stage=1)):
        if trial.arch_hash in finished:
            continue  # a resumed driver does not fine-tune the same model twice
        descriptor = {"arch": trial.arch} if trial.kind == "searched" else dict(trial.arch)
        trial_id = f"{experiment_id}-s2-{trial.arch_hash}"
        common = dict(stage=2, kind=trial.kind, arch=trial.arch, arch_hash=trial.arch_hash)
        store.record_trial(trial_id, experiment_id, state=State.RUNNING, **common)
        init_weights, init = stage1_init(spec.stage2.init, context.weights_dir, trial.arch_hash)
        if init_weights is None and spec.stage2.init == "stage1":
            log.warning("stage 2 of %s starts from %s", trial.arch_hash, init)
        config = FinetuneConfig(
            descriptor=descriptor,
            data_root=spec.dataset.path,
            bands=spec.dataset.bands,
            epochs=spec.stage2.epochs,
            batch_size=spec.stage1.batch_size,
            lr=spec.stage1.lr,
            seed=spec.seed,
            backbone_weights=context.backbone_weights,
            threads_per_worker=spec.stage2.cpus_per_worker or free_threads_per_worker(spec.stage2.workers),
            quarantine=context.quarantine,
            init_weights=init_weights,
            subset=spec.stage2.subset,
        )
        try:
            # stage 2: fine-tune on the full training split, evaluate on test, re-measure the latency
            tuned = finetune_candidate(
                config,
                f"experiment-{experiment_id}-stage2-{trial.arch_hash}",
                storage,
                spec.stage2.workers,
                meter=meter,
                context=context,
                stage1_latency_ms=trial.latency_ms,
                recheck_tolerance=spec.latency.recheck_tolerance,
            )
            if tuned.check["flags"]:
                log.warning("stage-2 latency check of %s: %s", trial.arch_hash, tuned.check)
            # export: safetensors, ONNX checked against PyTorch, model.json
            folder = Path(storage) / "models" / experiment_id / trial.arch_hash
            input_shape = (1, tuned.result.in_chans, context.chip_size, context.chip_size)
            artifacts, onnx = export_model(tuned.model, folder, input_shape, descriptor, tuned.data, config.settings())
            # registration: the completed stage-2 trial, then the model's entry
            entry = registration(tuned, config, init, artifacts, onnx, spec.latency.device)
            store.record_trial(trial_id, experiment_id, state=State.COMPLETED, **entry.trial, **common)
            store.register_model(
                experiment_id, trial_id=trial_id, kind=trial.kind, arch_hash=trial.arch_hash, **entry.model
            )
        except Exception as exc:  # noqa: BLE001 - one failed fine-tune must not sink the others
            log.exception("stage 2 failed for %s", trial.arch_hash)
            error = f"{type(exc).__name__}: {exc}"[:2000]
            store.record_trial(trial_id, experiment_id, state=State.FAILED, error=error, **common)


def main(argv: list[str] | None = None) -> int:
    from .entrypoint import job_main

    return job_main(
        argv,
        "Run one geonas experiment (the Ray Job entrypoint).",
        run_experiment,
        _record_failure,
    )


def _record_failure(store: Store, experiment_id: str, error: str) -> None:
    """A driver that stops leaves no trial open; the experiment ends failed unless it already ended
    (a user's cancel is recorded before the job is stopped, and the store keeps it)."""
    reason = f"interrupted when its driver stopped; re-run on resume ({error})"
    store.interrupt_open_trials(experiment_id, reason[:2000])
    store.update_experiment(experiment_id, state=State.FAILED, error=error)


if __name__ == "__main__":
    sys.exit(main())
