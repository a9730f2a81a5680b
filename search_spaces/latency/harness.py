"""The measuring harness: a latency one can trust on a busy machine.

Why the harness does more than time a loop: the search ranks architectures by latency, and on a busy
machine (here: 2 cores shared with other work) one naive timing is off by tens of percent. Background
load only ever *adds* time, so the harness

* fixes the thread count (and restores it), runs under ``torch.inference_mode`` with the garbage
  collector off while timing, and warms up first;
* with one thread, times the CPU time of the thread that runs the model (``thread_time``): the work
  runs inline on the calling thread (torch and ONNX Runtime both do so with one intra-op thread), so
  on an idle core it equals the wall time, and on a busy host it leaves out the time the scheduler gave
  to other processes -- which wall time would count as latency. With several threads the work is
  spread over a pool, so the harness times wall clock and drops a sample during which the OS preempted
  the process (an involuntary context switch, ``getrusage``): that sample timed someone else's work;
* normalises by a reference workload: a fixed network (``REFERENCE_BACKBONE``, at the same tile
  size) is timed alternately with the model, sample by sample, so both see the same machine at the
  same moment -- a neighbour that slows the core (SMT sibling, shared cache, memory bandwidth, clock)
  slows both alike and the *ratio* model / reference stays put. Each round times the model and then
  the reference, and ``ratio`` is the median of the per-round ratios (a ratio of two samples a few
  milliseconds apart sees the machine in one state; a ratio of block medians mixes states). With at
  least 80 rounds, two passes over 30 architectures on a shared 2-core host rank them alike (Spearman
  0.968-0.992 in 8 runs at load 2.5-4, ``bench/latency.py``), where block medians of 20 rounds gave
  0.953-0.979 (5 runs, load 1-5). The
  estimate is ``median_ms = ratio * reference_ms``, where ``reference_ms`` is the reference's latency
  on this host, profile and tile size, calibrated once (per process, or shared through the cache).
  Ranks between models therefore depend only on ratios; ``direct_ms`` keeps the un-normalised estimate
  (the median of the three fastest block medians: background load only ever adds time);
* repeats until the estimate is stable (relative standard error of the median round ratio, from the
  median absolute deviation so one disturbed round does not inflate it, or the spread of the three
  fastest block medians without a reference, below ``target_cv``) or until
  ``max_repeats`` / ``max_seconds``; ``stable`` says which.

On a GPU it times with CUDA events and synchronises, with the model in ``channels_last`` and bf16
autocast, as it would be deployed. ``onnxruntime-cpu`` exports the model to ONNX and times an
``InferenceSession`` with a fixed thread count.

Device profiles are named (``cpu-4threads``, ``cuda:nvidia-h100-80gb-hbm3``, ``onnxruntime-cpu``) so
that numbers from different hardware are never mixed on a leaderboard: the profile's canonical name is
part of every result and of every cache key.
"""

from __future__ import annotations

import gc
import math
import resource
import statistics
import time
from contextlib import ExitStack
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..errors import SpecError
from .profiles import DeviceProfile, cpu_twin, get_profile, list_profiles
from .results import InputShape, LatencyResult, check_shape
from .runners import RUNNERS, Runner, TorchCpuRunner

__all__ = ["REFERENCE_BACKBONE", "measure_latency", "reference_latency", "reference_shape"]


#: the reference workload: this backbone (features only, fixed random weights) on a 3-band batch of one
#: at the measured tile size. A real segmentation backbone because the ratio cancels contention best
#: when the reference spends its time like the models do -- partly streaming weights (memory-bound,
#: at small tiles), partly convolving activations (compute-bound) -- and resnet18 is the space's default.
REFERENCE_BACKBONE = "resnet18"
_CALIBRATION: dict[tuple[str, int, int], float] = {}


def reference_shape(input_shape: Any) -> InputShape:
    """The reference's input for a measured shape: batch 1, 3 bands, the same height and width."""
    shape = check_shape(input_shape)
    return (1, 3, shape[2], shape[3])


@lru_cache(maxsize=1)
def _reference_net() -> nn.Module:
    """The reference backbone with the same weights in every process (seeded, no download)."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        net = timm.create_model(REFERENCE_BACKBONE, features_only=True, pretrained=False)
    return net.eval()


def reference_latency(
    profile: str | DeviceProfile, input_shape: Any = (1, 3, 32, 32), *, refresh: bool = False
) -> float:
    """The reference's latency (ms) under ``profile``'s CPU threads here, for ``input_shape``'s tile size.

    Measured once per process and tile size (``refresh`` measures again) with the direct estimator and
    many repeats; pass the value to :func:`measure_latency` as ``reference=`` to share one calibration
    between processes (the latency meter stores it in its cache file).
    """
    twin = cpu_twin(get_profile(profile))
    shape = reference_shape(input_shape)
    key = (twin.name, shape[2], shape[3])
    if refresh or key not in _CALIBRATION:
        result = measure_latency(
            _reference_net(),
            shape,
            twin,
            reference=None,
            min_repeats=30,
            max_repeats=80,
            target_cv=0.01,
            max_seconds=30.0,
        )
        _CALIBRATION[key] = result.median_ms
    return _CALIBRATION[key]


def _involuntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _timed_block(runners: list[Runner], size: int) -> tuple[list[list[float]], int]:
    """``size`` rounds, each timing every runner once in turn, with the garbage collector off.

    A round during which the OS preempted the process (wall clock only) is retried, up to ``2 * size``
    rounds; on a host so busy that most rounds are preempted, the least spoiled ones fill the block.
    """
    kept: list[list[float]] = []
    spoiled: list[list[float]] = []
    sensitive = any(r.preemption_sensitive for r in runners)
    # no gc.collect() here: with the collector off no collection can fall inside a sample, and a full
    # collection per block cost more than the timing itself (0.25 s with a search's models in memory)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(2 * size):
            before = _involuntary_switches()
            round_ = [runner() for runner in runners]
            if sensitive and _involuntary_switches() != before:
                spoiled.append(round_)
            else:
                kept.append(round_)
            if len(kept) == size:
                break
    finally:
        if was_enabled:
            gc.enable()
    if len(kept) < size:
        kept += sorted(spoiled)[: size - len(kept)]
    return [list(column) for column in zip(*kept, strict=True)], len(spoiled)


def _estimate(block_medians: list[float]) -> tuple[float, float]:
    """Direct estimate: the median of the three fastest block medians, and their relative spread."""
    fastest = sorted(block_medians)[:3]
    return statistics.median(fastest), (fastest[-1] - fastest[0]) / fastest[0]


def _ratio_estimate(ratios: list[float]) -> tuple[float, float]:
    """Normalised estimate: the median round ratio and its relative standard error.

    The standard error of a median is 1.2533 sigma / sqrt(n); sigma is estimated robustly as 1.4826
    times the median absolute deviation, so a few rounds spoiled by a neighbour neither move the
    estimate nor keep the harness repeating.
    """
    median = statistics.median(ratios)
    if len(ratios) < 2:
        return median, math.inf
    mad = statistics.median(abs(r - median) for r in ratios)
    return median, 1.2533 * 1.4826 * mad / math.sqrt(len(ratios)) / median


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    profile: str | DeviceProfile = "cpu-1threads",
    *,
    warmup: int = 5,
    min_repeats: int = 80,
    max_repeats: int = 200,
    target_cv: float = 0.01,
    block_size: int = 5,
    max_seconds: float = 60.0,
    reference: Literal["auto"] | float | None = "auto",
    seed: int = 0,
) -> LatencyResult:
    """Measure one forward pass of ``model`` on a random ``input_shape`` batch under ``profile``.

    ``reference="auto"`` (CPU profiles) times a fixed reference workload alternately with the model and
    reports ``ratio * reference_ms`` (see the module doc); a number uses that calibration; ``None`` (and
    CUDA profiles) time the model alone. Stops once at least ``min_repeats`` samples are in and the
    estimate is stable within ``target_cv`` (relative), or at ``max_repeats`` / ``max_seconds`` (then
    ``stable=False``). The model's training flag and the thread count are restored afterwards; CUDA and
    ONNX Runtime profiles work on copies, so the caller's model is never moved.
    """
    prof = get_profile(profile)
    ok, why = prof.availability()
    if not ok:
        raise SpecError(
            f"device profile {prof.name} cannot be measured on this machine: {why}; "
            f"available here: {', '.join(list_profiles(available_only=True))}",
            field="device",
        )
    shape = check_shape(input_shape)
    if not (1 <= min_repeats <= max_repeats and block_size >= 1 and warmup >= 0 and target_cv > 0):
        raise SpecError("need 1 <= min_repeats <= max_repeats, block_size >= 1, warmup >= 0, target_cv > 0")
    reference_ms: float | None = None
    if prof.backend != "torch-cuda" and reference is not None:
        reference_ms = reference_latency(prof, shape) if reference == "auto" else float(reference)
    started = time.perf_counter()
    samples: list[float] = []
    block_medians: list[float] = []
    ratios: list[float] = []
    rejected = 0
    stable = False
    with ExitStack() as stack:
        runner = stack.enter_context(RUNNERS[prof.backend](model, shape, prof, seed))
        runners = [runner]
        if reference_ms is not None:
            runners.append(
                stack.enter_context(TorchCpuRunner(_reference_net(), reference_shape(shape), cpu_twin(prof), 0))
            )
        for _ in range(warmup):
            for each in runners:
                each()
        while True:
            columns, spoiled = _timed_block(runners, block_size)
            samples += columns[0]
            rejected += spoiled
            block_medians.append(statistics.median(columns[0]))
            if reference_ms is not None:
                ratios += [m / r for m, r in zip(columns[0], columns[1], strict=True)]
                spread = _ratio_estimate(ratios)[1]
            else:
                spread = _estimate(block_medians)[1] if len(block_medians) >= 3 else math.inf
            if len(samples) >= min_repeats and len(block_medians) >= 3 and spread <= target_cv:
                stable = True
                break
            if len(samples) >= max_repeats or time.perf_counter() - started > max_seconds:
                break
    values = np.asarray(samples)
    mean = float(values.mean())
    direct_ms = _estimate(block_medians)[0]
    ratio = _ratio_estimate(ratios)[0] if reference_ms is not None else None
    return LatencyResult(
        median_ms=float(ratio * reference_ms) if ratio is not None and reference_ms else float(direct_ms),
        p90_ms=float(np.percentile(values, 90)),
        cv=float(values.std() / mean) if mean > 0 else 0.0,
        repeats=len(samples),
        profile=prof.name,
        input_shape=shape,
        raw_median_ms=float(np.median(values)),
        min_ms=float(values.min()),
        rejected=rejected,
        stable=stable,
        clock=runner.clock,
        wall_s=time.perf_counter() - started,
        direct_ms=float(direct_ms),
        reference_ms=reference_ms,
        ratio=ratio,
        estimate_rse=float(spread),
    )
