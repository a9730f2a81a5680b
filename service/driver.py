"""The experiment driver: what a Ray Job runs for one experiment.

``python -m service.driver EXPERIMENT_ID`` loads the experiment from the store, runs stage 1 as a
Ray Tune experiment (the searcher behind :class:`~search_spaces.searchers.tune.TuneAdapter`, each
trial :func:`trainers.stage1.stage1_trainable`), trains the requested baselines the same way, and
writes every trial result to the store as it arrives (a Tune callback). The API process never
trains; this process never serves HTTP.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any

from search_spaces.errors import Conflict, GeonasError

from .specs import ExperimentSpec
from .states import State
from .store import Store, get_store

log = logging.getLogger("geonas.driver")

__all__ = ["main", "run_experiment", "run_stage2", "stage2_candidates", "every_trial_failed"]


def _store_callback_class():
    from ray.tune import Callback

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

        def _arch(self, trial) -> tuple[dict[str, Any] | None, str | None]:
            from trainers.stage1 import descriptor_key

            config = trial.config
            if "arch" in config:
                return config["arch"], descriptor_key(config)[1]
            if "baseline" in config:
                return {"baseline": config["baseline"], "backbone": config["backbone"]}, descriptor_key(config)[1]
            return None, None

        def _write(self, trial, state: str, result: dict[str, Any] | None = None, error: str | None = None):
            arch, arch_hash = self._arch(trial)
            fields: dict[str, Any] = {} if error is None else {"error": error}
            history = None
            if result:
                fields.update(
                    epoch=int(result.get("epoch", 0)),
                    miou=result.get("miou"),
                    latency_ms=result.get("latency_ms"),
                    latency_device=result.get("latency_device"),
                    params=result.get("params"),
                    reward=result.get("reward"),
                    node_id=result.get("node_id"),
                )
                history = {
                    k: _json_safe(result.get(k))
                    for k in ("epoch", "miou", "loss", "reward", "train_s", "eval_s", "latency_s", "chips_per_s", "iou")
                }
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
            self._write(trial, State.FAILED, trial.last_result or None, error=_trial_error(trial))

        def on_trial_recover(self, iteration, trials, trial, **info):
            # retried from its last checkpoint: the reason stays on the trial even when the retry succeeds
            self._write(trial, State.RUNNING, error=f"retried after: {_trial_error(trial)}")

    return StoreCallback


def _json_safe(value: Any) -> Any:
    """NaN and ±inf as None (a diverged trial's loss): PostgreSQL's JSON refuses them, JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _trial_error(trial) -> str:
    """The last line of the trial's exception, e.g. ``DataError: chip ... is unreadable``."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "trial failed")[:2000]


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
    chip = _chip_size(probe)
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


def _chip_size(split) -> int:
    """Chip size in pixels from the first readable chip (a corrupt one is the trials' to report)."""
    from trainers.datasets import ChipError

    for index in range(min(len(split), 20)):
        try:
            return int(split[index][0].shape[-1])
        except ChipError:
            continue
    raise GeonasError(f"none of the first chips of {split!r} can be read; check the dataset")


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


def trial_resources(spec: ExperimentSpec) -> dict[str, float]:
    """CPUs per trial from the spec; one GPU per trial when the cluster has GPUs."""
    import ray

    resources = {"cpu": spec.stage1.cpus_per_trial}
    if ray.cluster_resources().get("GPU", 0) >= 1:
        resources["gpu"] = 1
    return resources


def start_latency_meter(context):
    """Create the experiment's latency meter actor (trials find it by name; one calibration for all)."""
    from search_spaces.latency.meter import MeterPlacement, get_latency_meter

    settings = context.latency
    placement = MeterPlacement(num_cpus=settings.meter_cpus, harness=dict(settings.harness))
    meter = get_latency_meter(settings.profile, settings.cache_path, placement)
    tile = settings.tile_size or context.chip_size
    meter.warm_up.remote((settings.batch_size, context.in_chans, tile, tile))  # while the first trial starts
    return meter


METER_CPUS = 1.0  # CPUs the latency meter holds when no node offers the dedicated resource


def resolve_relative_target(
    spec: ExperimentSpec, experiment_id: str, store: Store, context, meter, backbone: str
) -> ExperimentSpec:
    """``latency.target_ratio`` x the baseline's latency, measured now by the experiment's meter on the
    trials' input shape, stored in the experiment's spec as ``target_ms`` (so stage 1, stage 2, the
    leaderboard and a resumed driver all read the same number)."""
    import ray

    lat = spec.latency
    tile = lat.tile_size or context.chip_size
    shape = [lat.batch_size, context.in_chans, tile, tile]
    descriptor = {"baseline": lat.relative_to, "backbone": backbone}
    measured = ray.get(meter.measure.remote(descriptor, context.in_chans, context.num_classes, shape), timeout=900)
    target = round(lat.target_ratio * float(measured["median_ms"]), 4)
    raw = copy.deepcopy(store.get_experiment(experiment_id).spec)  # as submitted, plus the resolved target
    raw.setdefault("latency", {})["target_ms"] = target
    store.update_experiment(experiment_id, spec=raw)
    log.info(
        "latency target %.3f ms = %s x the %s's %.3f ms on %s",
        target, lat.target_ratio, lat.relative_to, measured["median_ms"], lat.device,
    )
    return ExperimentSpec.model_validate(raw)


def concurrency(spec: ExperimentSpec, resources: dict[str, float]) -> int:
    """The spec's concurrency, capped by how many trials the cluster can hold at once.

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
    return max(1, min(spec.budget.concurrency, fits))


def early_stopping(spec: ExperimentSpec):
    from trainers.early_stopping import make_scheduler

    s = spec.stage1
    return make_scheduler(s.early_stopping, s.early_stopping_metric, s.epochs, s.grace_period, s.reduction_factor)


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


def _run_name(storage: str, experiment_id: str) -> str:
    """A fresh Tune run name per driver attempt: ``experiment-ID``, then ``experiment-ID-a2``, …"""
    base = f"experiment-{experiment_id}"
    if "://" in storage or not (Path(storage) / base).exists():
        return base
    attempt = 2
    while (Path(storage) / f"{base}-a{attempt}").exists():
        attempt += 1
    return f"{base}-a{attempt}"


def run_experiment(experiment_id: str, store: Store, storage: str) -> None:
    """Run (or resume) one experiment: stage 1, baselines, stage 2.

    Resuming is the same call: completed trials stay in the store and count against the budget, the
    searcher is restored from its last saved state, and the proposals that were in flight when the
    previous driver stopped are trained again first, so the experiment ends with exactly its
    budgeted number of finished trials and no architecture trained twice.
    """
    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from search_spaces.nasfpn import NasFpnSpace
    from search_spaces.searchers import create_searcher
    from search_spaces.searchers.tune import TuneAdapter
    from trainers.stage1 import stage1_trainable

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
    space = NasFpnSpace(search_space_config(spec, backbone_name))
    searcher = create_searcher(spec.searcher.name, space, seed=spec.seed, **spec.searcher.options)
    adapter = TuneAdapter(searcher, to_config=lambda tokens: {"arch": space.decode(tokens).to_dict()})
    state_path = Path(storage) / f"experiment-{experiment_id}.searcher.pkl"
    if state_path.exists():
        adapter.restore(str(state_path))
        replayed = adapter.requeue_pending()
        log.info("resumed searcher state from %s; %d in-flight proposals re-run first", state_path, replayed)
    store.interrupt_open_trials(experiment_id, "interrupted when its driver stopped; re-run on resume")
    remaining = spec.budget.trials - store.count_finished(experiment_id, stage=1, kind="searched")

    resources = trial_resources(spec)
    trainable = tune.with_resources(tune.with_parameters(stage1_trainable, context=context), resources)
    StoreCallback = _store_callback_class()
    SearcherCheckpoint = _searcher_checkpoint_class()
    if remaining > 0:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(adapter, max_concurrent=concurrency(spec, resources)),
                scheduler=early_stopping(spec),
                num_samples=remaining,
                time_budget_s=spec.budget.wall_time_s,
                reuse_actors=True,  # a new worker process per trial costs seconds; the trainable resets itself
            ),
            run_config=tune.RunConfig(
                name=_run_name(storage, experiment_id),
                storage_path=storage,
                callbacks=[StoreCallback(store.url, experiment_id), SearcherCheckpoint(adapter, state_path)],
                failure_config=tune.FailureConfig(max_failures=spec.stage1.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=0,
            ),
        )
        tuner.fit()

    done_baselines = {
        t.arch["baseline"]
        for t in store.list_trials(experiment_id, stage=1)
        if t.kind == "baseline" and t.state == State.COMPLETED and t.arch
    }
    baselines = [b for b in spec.baselines if b not in done_baselines]
    if baselines:
        backbone = space.config.backbones[0]
        baseline_tuner = tune.Tuner(
            trainable,
            param_space={"baseline": tune.grid_search(baselines), "backbone": backbone},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency(spec, resources)),
            run_config=tune.RunConfig(
                name=_run_name(storage, experiment_id) + "-baselines",
                storage_path=storage,
                callbacks=[StoreCallback(store.url, experiment_id, kind="baseline")],
                failure_config=tune.FailureConfig(max_failures=spec.stage1.max_failures),
                verbose=0,
            ),
        )
        baseline_tuner.fit()
    failure = every_trial_failed(store.list_trials(experiment_id, stage=1))
    if failure is not None:  # the job's entrypoint records it: the experiment ends failed, not completed
        raise GeonasError(failure)
    run_stage2(spec, experiment_id, store, storage, context)
    store.update_experiment(experiment_id, state=State.COMPLETED)


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


def stage2_threads(workers: int) -> int:
    """CPU threads per fine-tuning worker when the spec leaves it open: the free CPUs shared out.

    Stage 2 runs after the search, so the CPUs its trials held are free again; a worker lives on
    one node, so it never asks for more than the largest node has.
    """
    import ray

    free = ray.available_resources().get("CPU", 1.0)
    largest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=1.0)
    return max(1, int(min(free // workers, largest)))


def remeasure_latency(meter, descriptor: dict[str, Any], num_classes: int, shape: tuple[int, ...]) -> dict[str, Any]:
    """The fine-tuned model's latency measured again, now, by the experiment's meter (same harness and
    calibration as stage 1, on the meter's own cores): never from a cache, which may hold another
    experiment's or an earlier day's number. Returns the meter's result (``median_ms``, ``machine``, ...)."""
    import ray

    from search_spaces.builder import model_from_descriptor
    from search_spaces.latency.cache import model_key

    in_chans = int(shape[1])
    key = model_key(descriptor, num_classes) + "/stage2"
    factory = partial(model_from_descriptor, descriptor, in_chans, num_classes)
    return ray.get(meter.measure_module.remote(key, factory, list(shape), fresh=True), timeout=900)


def stage1_init(spec: ExperimentSpec, context, arch_hash: str | None) -> tuple[str | None, str]:
    """(weights file or None, what stage 2 starts from): the trial's best stage-1 epoch unless the
    spec says scratch, or its weights are not on this machine (storage on an object store)."""
    from trainers.stage1 import best_weights_path

    if spec.stage2.init == "scratch":
        return None, "scratch"
    if context.weights_dir is None or arch_hash is None:
        return None, "scratch (stage-1 weights are not kept with object-store storage)"
    path = best_weights_path(context.weights_dir, arch_hash)
    if not path.exists():
        return None, f"scratch (no stage-1 weights at {path})"
    return str(path), "stage1"


def run_stage2(spec: ExperimentSpec, experiment_id: str, store: Store, storage: str, context) -> None:
    """Fine-tune, evaluate, re-measure, export and register each stage-2 candidate."""
    import json

    from search_spaces.builder import model_from_descriptor
    from search_spaces.feasibility import recheck
    from trainers.export import export_onnx, save_weights
    from trainers.stage2 import FinetuneConfig, run_finetune

    meter = start_latency_meter(context)  # the stage-1 meter, or a new one when resuming at stage 2
    finished = {t.arch_hash for t in store.list_trials(experiment_id, stage=2) if t.state == State.COMPLETED}
    for trial in stage2_candidates(spec, store.list_trials(experiment_id, stage=1)):
        if trial.arch_hash in finished:
            continue  # a resumed driver does not fine-tune the same model twice
        descriptor = {"arch": trial.arch} if trial.kind == "searched" else dict(trial.arch)
        trial_id = f"{experiment_id}-s2-{trial.arch_hash}"
        common = dict(stage=2, kind=trial.kind, arch=trial.arch, arch_hash=trial.arch_hash)
        store.record_trial(trial_id, experiment_id, state=State.RUNNING, **common)
        init_weights, init = stage1_init(spec, context, trial.arch_hash)
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
            threads_per_worker=spec.stage2.cpus_per_worker or stage2_threads(spec.stage2.workers),
            quarantine=context.quarantine,
            init_weights=init_weights,
            subset=spec.stage2.subset,
        )
        try:
            result = run_finetune(
                config, f"experiment-{experiment_id}-stage2-{trial.arch_hash}", storage, spec.stage2.workers
            )
            model = model_from_descriptor(descriptor, result.in_chans, result.num_classes).eval()
            model.load_state_dict(result.state_dict)
            tile = spec.latency.tile_size or context.chip_size
            shape = (spec.latency.batch_size, result.in_chans, tile, tile)
            measured = remeasure_latency(meter, descriptor, result.num_classes, shape)
            latency_ms = float(measured["median_ms"])
            lat = spec.latency
            check = recheck(trial.latency_ms, latency_ms, lat.target_ms, lat.margin, lat.recheck_tolerance).to_dict()
            check["machine"] = measured.get("machine")
            if check["flags"]:
                log.warning("stage-2 latency check of %s: %s", trial.arch_hash, check)
            folder = Path(storage) / "models" / experiment_id / trial.arch_hash
            folder.mkdir(parents=True, exist_ok=True)
            data = {
                "bands": result.bands,
                "classes": result.class_names,
                "mean": result.mean,
                "std": result.std,
                "chip_size": context.chip_size,
                "ignore_index": context.ignore_index,
            }
            weights = save_weights(
                model,
                folder / "weights.safetensors",
                {"descriptor": json.dumps(descriptor), "data": json.dumps(data)},
            )
            onnx = export_onnx(model, (1, result.in_chans, context.chip_size, context.chip_size), folder / "model.onnx")
            (folder / "model.json").write_text(
                json.dumps({"descriptor": descriptor, "data": data, "training": _jsonable(config)}, indent=2)
            )
            metrics = {k: v for k, v in result.metrics.items() if k not in ("final",)}
            metrics["onnx_max_abs_diff"] = onnx.max_abs_diff
            metrics["latency_check"] = check
            history = result.metrics.get("history") or []
            training = {**_jsonable(config), "init": init, "first_epoch_loss": history[0]["loss"] if history else None}
            store.record_trial(
                trial_id,
                experiment_id,
                state=State.COMPLETED,
                epoch=spec.stage2.epochs,
                history_entry={"epoch": spec.stage2.epochs, "miou": metrics["miou"], "latency_check": check},
                miou=metrics["miou"],
                latency_ms=latency_ms,
                latency_device=spec.latency.device,
                params=sum(p.numel() for p in model.parameters()),
                **common,
            )
            store.register_model(
                experiment_id,
                trial_id=trial_id,
                kind=trial.kind,
                arch_hash=trial.arch_hash,
                descriptor=descriptor,
                miou=metrics["miou"],
                latency_ms=latency_ms,
                latency_device=spec.latency.device,
                metrics=metrics,
                training=training,
                data=data,
                artifacts={
                    "weights.safetensors": str(weights),
                    "model.onnx": str(folder / "model.onnx"),
                    "model.json": str(folder / "model.json"),
                },
            )
        except Exception as exc:  # noqa: BLE001 - one failed fine-tune must not sink the others
            log.exception("stage 2 failed for %s", trial.arch_hash)
            store.record_trial(
                trial_id,
                experiment_id,
                state=State.FAILED,
                error=f"{type(exc).__name__}: {exc}"[:2000],
                **common,
            )


def _jsonable(config) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(config).items() if k != "descriptor"}


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
