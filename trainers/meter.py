"""The experiment's latency meter, as the driver uses it: started once for stage 1, asked again in stage 2.

:func:`start_latency_meter` creates the experiment's meter actor before the first trial (trials find
it by name, so one calibration serves them all); :func:`measure_baseline` asks it for the baseline a
relative latency target is set against; :func:`remeasure_latency` asks it for a fine-tuned model's
latency once more, fresh. The meter itself is :mod:`search_spaces.latency.meter`. Nothing here
imports torch or Ray at import time: the driver imports this module.
"""

from __future__ import annotations

from functools import partial
from typing import Any

__all__ = ["METER_CPUS", "start_latency_meter", "measure_baseline", "measure_space", "remeasure_latency"]

METER_CPUS = 1.0  # CPUs the latency meter holds when no node offers the dedicated resource


def start_latency_meter(context):
    """Create the experiment's latency meter actor (trials find it by name; one calibration for all)."""
    from search_spaces.latency.meter import MeterPlacement, get_latency_meter

    settings = context.latency
    placement = MeterPlacement(num_cpus=settings.meter_cpus, harness=dict(settings.harness))
    meter = get_latency_meter(settings.profile, settings.cache_path, placement)
    tile = settings.tile_size or context.chip_size
    meter.warm_up.remote((settings.batch_size, context.in_chans, tile, tile))  # while the first trial starts
    return meter


def measure_baseline(meter, context, baseline: str, backbone: str) -> dict[str, Any]:
    """``baseline`` on ``backbone`` measured now by the experiment's meter on the trials' input shape
    (the stage-1 ``context``'s latency batch and tile size). Returns the meter's result (``median_ms``, ...)."""
    import ray

    tile = context.latency.tile_size or context.chip_size
    shape = [context.latency.batch_size, context.in_chans, tile, tile]
    descriptor = {"baseline": baseline, "backbone": backbone}
    return ray.get(meter.measure.remote(descriptor, context.in_chans, context.num_classes, shape), timeout=900)


def measure_space(meter, context, space, samples: int = 8, seed: int = 0) -> dict[str, Any]:
    """The median latency of ``samples`` architectures drawn uniformly from ``space`` (a seeded draw),
    measured now by the experiment's meter like :func:`measure_baseline`: a target relative to it binds
    for about half of what a searcher proposes at first, on any machine. Returns ``median_ms`` and the
    draws' ``samples_ms``."""
    import statistics

    import numpy as np
    import ray

    from search_spaces.tokens import sample_uniform

    tile = context.latency.tile_size or context.chip_size
    shape = [context.latency.batch_size, context.in_chans, tile, tile]
    rng = np.random.default_rng(seed)
    draws = [{"arch": space.decode(sample_uniform(space, rng)).to_dict()} for _ in range(samples)]
    results = ray.get([meter.measure.remote(d, context.in_chans, context.num_classes, shape) for d in draws],
                      timeout=900)
    times = [float(r["median_ms"]) for r in results]
    return {"median_ms": statistics.median(times), "samples_ms": times}


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
