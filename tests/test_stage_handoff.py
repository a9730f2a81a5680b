"""What stage 1 hands stage 2: its best weights and a latency that is measured again, on this machine.

Stage 2 fine-tunes from the trial's best stage-1 epoch (``stage2.init: stage1``, the default), so its
first epoch starts where stage 1 left off; its latency is measured fresh, never answered by a cache
that another experiment or another machine filled; a pruned trial tells nobody a made-up mIoU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from search_spaces.latency.cache import LatencyCache, LatencyKey, cached_latency
from search_spaces.latency.machine import machine_fingerprint
from search_spaces.latency.results import LatencyResult
from search_spaces.nasfpn import ArchSpec, Cell
from trainers.datasets import SegmentationDataset
from trainers.stage1 import LatencySettings, Stage1Context, best_weights_path, descriptor_key, run_trial

QUICK = dict(warmup=1, min_repeats=5, max_repeats=10, block_size=5, max_seconds=20.0)
BACKBONE = "mobilenetv3_small_050"


def small_arch() -> dict:
    cells = (Cell(0, 3, 3, "sum"), Cell(1, 4, 2, "sum"))
    return ArchSpec(BACKBONE, (2, 3, 4, 5), 16, cells).to_dict()


def context(dataset: Path, **overrides) -> Stage1Context:
    train = SegmentationDataset(dataset, "train")
    values = dict(
        train=train,
        val=SegmentationDataset(dataset, "val"),
        in_chans=train.in_chans,
        num_classes=train.num_classes,
        chip_size=32,
        ignore_index=train.ignore_index,
        epochs=4,
        batch_size=8,
        lr=0.01,
        latency=LatencySettings(harness=dict(QUICK, reference=None)),
    )
    values.update(overrides)
    return Stage1Context(**values)


def test_a_pruned_trial_reports_no_miou(demo_dataset):
    reports = []
    hard = LatencySettings(target_ms=1e-3, reward="hard", harness=dict(QUICK, reference=None))
    ctx = context(demo_dataset, latency=hard)
    run_trial({"arch": small_arch()}, ctx, lambda metrics, state=None: reports.append(metrics))
    (report,) = reports
    assert report["pruned"] is True and report["miou"] is None and report["latency_ms"] > 1e-3
    assert report["reward"] == 0.0  # what the searcher learns from: an untrained model earns nothing


def test_stage_two_starts_from_the_best_stage_one_weights(ray_cluster, demo_dataset, tmp_path):
    from trainers.stage2 import FinetuneConfig, run_finetune

    weights = tmp_path / "weights"
    arch = small_arch()
    reports = []
    run_trial({"arch": arch}, context(demo_dataset, weights_dir=str(weights)), lambda m, state=None: reports.append(m))
    path = best_weights_path(weights, descriptor_key({"arch": arch})[1])
    assert path.is_file() and [r["epoch"] for r in reports] == [1, 2, 3, 4]

    def first_epoch_loss(init: str | None, name: str) -> float:
        config = FinetuneConfig(
            descriptor={"arch": arch}, data_root=str(demo_dataset), epochs=1, batch_size=8, lr=0.01, init_weights=init
        )
        return run_finetune(config, name, str(tmp_path / "train")).metrics["history"][0]["loss"]

    from_stage1 = first_epoch_loss(str(path), "from-stage1")
    scratch = first_epoch_loss(None, "from-scratch")
    assert from_stage1 < scratch, (from_stage1, scratch)


def test_weights_that_do_not_fit_are_refused_with_what_to_do(tmp_path):
    from safetensors.torch import save_file

    from search_spaces.builder import model_from_descriptor
    from search_spaces.errors import GeonasError
    from trainers.stage2 import load_init_weights

    save_file({"nope": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    model = model_from_descriptor({"arch": small_arch()}, 4, 3)
    with pytest.raises(GeonasError, match="stage2.init: scratch"):
        load_init_weights(model, str(tmp_path / "w.safetensors"))


def test_the_latency_cache_misses_on_another_machine(tmp_path):
    cache = LatencyCache(tmp_path / "latency.sqlite")
    here = LatencyKey.of("abc", "cpu-1threads", (1, 3, 32, 32))
    assert here.machine == machine_fingerprint("cpu-1threads") and "cpu" in here.machine
    measured = []

    def measure() -> LatencyResult:
        measured.append(1)
        return LatencyResult(median_ms=2.0, p90_ms=2.2, cv=0.01, repeats=5, profile="cpu-1threads",
                             input_shape=(1, 3, 32, 32))  # fmt: skip

    assert cached_latency(cache, here, measure).machine == here.machine
    assert cached_latency(cache, here, measure).cached and len(measured) == 1
    elsewhere = LatencyKey.of("abc", "cpu-1threads", (1, 3, 32, 32), machine="another-cpu-64cpu-0123456789")
    assert cache.get(elsewhere) is None
    assert not cached_latency(cache, elsewhere, measure).cached and len(measured) == 2


def test_stage_two_remeasures_fresh_on_the_meter(ray_cluster, tmp_path):
    from search_spaces.builder import model_from_descriptor
    from search_spaces.latency.meter import MeterPlacement, get_latency_meter
    from service.driver import remeasure_latency

    meter = get_latency_meter(
        "cpu-1threads", tmp_path / "meter.sqlite", MeterPlacement(namespace="test-fresh", harness=QUICK)
    )
    try:
        descriptor = {"arch": small_arch()}
        shape = (1, 4, 32, 32)
        cached = ray_cluster.get(meter.measure.remote(descriptor, 4, 3, shape), timeout=300)
        factory = lambda: model_from_descriptor(descriptor, 4, 3)  # noqa: E731
        key = cached["key"] + "/stage2"
        ray_cluster.get(meter.measure_module.remote(key, factory, list(shape)), timeout=300)  # an old entry
        fresh = remeasure_latency(meter, descriptor, 3, shape)
        again = remeasure_latency(meter, descriptor, 3, shape)
        assert fresh["cached"] is False and again["cached"] is False
        assert fresh["machine"] == machine_fingerprint("cpu-1threads")
        assert ray_cluster.get(meter.stats.remote())["measured"] == 4  # none of the fresh ones was a cache hit
    finally:
        ray_cluster.kill(meter)
