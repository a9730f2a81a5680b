"""Latency one can trust: a measuring harness, named device profiles, and a persistent cache.

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

import copy
import gc
import json
import math
import os
import re
import resource
import socket
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .errors import SpecError

__all__ = [
    "DeviceProfile",
    "LatencyResult",
    "LatencyKey",
    "LatencyCache",
    "measure_latency",
    "reference_latency",
    "REFERENCE_BACKBONE",
    "reference_shape",
    "cached_latency",
    "get_profile",
    "list_profiles",
    "list_profile_patterns",
    "register_profile",
    "cpu_threads",
    "normalise_device_name",
    "machine_fingerprint",
]

InputShape = tuple[int, int, int, int]
Backend = Literal["torch-cpu", "torch-cuda", "onnxruntime-cpu"]


# ---------------------------------------------------------------------------------------------------
# Device profiles
# ---------------------------------------------------------------------------------------------------


def normalise_device_name(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` → ``"nvidia-h100-80gb-hbm3"``: stable, URL- and file-safe."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _visible_cuda_names() -> list[str]:
    if not torch.cuda.is_available():
        return []
    return [normalise_device_name(torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DeviceProfile:
    """Where and how a latency is measured. ``name`` is canonical: equal names, comparable numbers."""

    name: str
    backend: Backend
    threads: int | None = None
    device_name: str | None = None  # normalised GPU name, for CUDA profiles

    def availability(self) -> tuple[bool, str]:
        """``(True, "")`` when this machine can measure with the profile, else ``(False, why)``."""
        if self.backend in ("torch-cpu", "onnxruntime-cpu"):
            cpus = _usable_cpus()
            if self.threads is not None and self.threads > cpus:
                return False, f"{self.name} needs {self.threads} CPU threads; this process may use {cpus}"
            if self.backend == "onnxruntime-cpu":
                try:
                    import onnxruntime  # noqa: F401
                except ImportError:
                    return False, "onnxruntime is not installed"
            return True, ""
        names = _visible_cuda_names()
        if not names:
            return False, "no CUDA device is visible (torch.cuda.is_available() is False)"
        if self.device_name is not None and self.device_name not in names:
            return False, f"no visible GPU is a {self.device_name}; visible: {', '.join(names)}"
        return True, ""

    @property
    def available(self) -> bool:
        return self.availability()[0]

    def cuda_index(self) -> int:
        """Index of the first visible GPU matching this profile."""
        names = _visible_cuda_names()
        if self.device_name is None:
            return 0
        return names.index(self.device_name)


@dataclass(frozen=True)
class _Family:
    pattern: str  # how users write it, e.g. "cpu-<N>threads"
    regex: re.Pattern[str]
    factory: Callable[[re.Match[str]], DeviceProfile]
    examples: Callable[[], list[str]]


_FAMILIES: dict[str, _Family] = {}


def register_profile(
    pattern: str, regex: str, examples: Callable[[], list[str]] | None = None
) -> Callable[[Callable[[re.Match[str]], DeviceProfile]], Callable[[re.Match[str]], DeviceProfile]]:
    """Register a family of profiles: names matching ``regex`` (in full) are built by the factory."""

    def decorator(factory: Callable[[re.Match[str]], DeviceProfile]) -> Callable[..., DeviceProfile]:
        if pattern in _FAMILIES:
            raise ValueError(f"device profile {pattern!r} is registered twice")
        _FAMILIES[pattern] = _Family(pattern, re.compile(regex), factory, examples or (lambda: [pattern]))
        return factory

    return decorator


def _threads(match: re.Match[str]) -> int:
    n = int(match.group("n"))
    if not 1 <= n <= 512:
        raise SpecError(f"a thread count must be between 1 and 512, got {n}", field="device")
    return n


def _cpu_examples() -> list[str]:
    counts = sorted({1, 2, 4, _usable_cpus()})
    return [f"cpu-{n}threads" for n in counts]


@register_profile("cpu-<N>threads", r"cpu-(?P<n>\d+)threads?", _cpu_examples)
def _cpu_profile(match: re.Match[str]) -> DeviceProfile:
    n = _threads(match)
    return DeviceProfile(f"cpu-{n}threads", "torch-cpu", threads=n)


@register_profile("cuda", r"cuda(:0)?", lambda: ["cuda"])
def _cuda_profile(match: re.Match[str]) -> DeviceProfile:
    names = _visible_cuda_names()
    if not names:
        return DeviceProfile("cuda", "torch-cuda")
    return DeviceProfile(f"cuda:{names[0]}", "torch-cuda", device_name=names[0])


@register_profile(
    "cuda:<device name>", r"cuda:(?P<dev>.*[^\d].*)", lambda: [f"cuda:{n}" for n in _visible_cuda_names()]
)
def _cuda_named_profile(match: re.Match[str]) -> DeviceProfile:
    name = normalise_device_name(match.group("dev"))
    if not name:
        raise SpecError("a CUDA profile needs a device name, e.g. cuda:nvidia-h100-80gb-hbm3", field="device")
    return DeviceProfile(f"cuda:{name}", "torch-cuda", device_name=name)


@register_profile(
    "onnxruntime-cpu[-<N>threads]",
    r"onnxruntime-cpu(-(?P<n>\d+)threads?)?",
    lambda: ["onnxruntime-cpu", "onnxruntime-cpu-2threads"],
)
def _ort_profile(match: re.Match[str]) -> DeviceProfile:
    n = _threads(match) if match.group("n") else 1
    return DeviceProfile("onnxruntime-cpu" if n == 1 else f"onnxruntime-cpu-{n}threads", "onnxruntime-cpu", n)


def list_profile_patterns() -> list[str]:
    """The registered families, as users write them (``cpu-<N>threads``, ...)."""
    return list(_FAMILIES)


def list_profiles(available_only: bool = False) -> list[str]:
    """Concrete profile names: common examples of every family, and every GPU visible here."""
    names: list[str] = []
    for family in _FAMILIES.values():
        for example in family.examples():
            profile = get_profile(example)
            if profile.name not in names and (not available_only or profile.available):
                names.append(profile.name)
    return names


def get_profile(name: str | DeviceProfile) -> DeviceProfile:
    """The profile called ``name`` (canonicalised); unknown names raise a :class:`SpecError`."""
    if isinstance(name, DeviceProfile):
        return name
    text = str(name).strip()
    for family in _FAMILIES.values():
        match = family.regex.fullmatch(text.lower())
        if match:
            return family.factory(match)
    raise SpecError(
        f"unknown device profile {name!r}; valid profiles: {', '.join(list_profile_patterns())} "
        f"(available here: {', '.join(list_profiles(available_only=True))})",
        field="device",
    )


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_shape(input_shape: Any) -> InputShape:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise SpecError(f"input shape must be 4 integers (B, C, H, W), got {input_shape!r}") from None
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise SpecError(f"input shape must be 4 positive integers (B, C, H, W), got {list(shape)}")
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class LatencyResult:
    """One measured latency and how far to trust it.

    ``median_ms`` is the estimate (``ratio * reference_ms`` when normalised, else ``direct_ms``; see the
    module doc), ``estimate_rse`` its relative uncertainty;
    ``raw_median_ms``, ``p90_ms`` and ``cv`` (std / mean) describe every kept sample, so a noisy
    measurement shows as such. ``clock`` is what was timed: ``thread-cpu`` (one-thread CPU profiles),
    ``wall``, or ``cuda-events``. ``rejected`` counts samples dropped because the OS preempted the process
    while they ran; ``stable`` is False when the repeat cap came before the estimate settled.
    """

    median_ms: float
    p90_ms: float
    cv: float
    repeats: int
    profile: str
    input_shape: InputShape
    measured_at: str = field(default_factory=_utc_now)
    raw_median_ms: float = math.nan
    min_ms: float = math.nan
    rejected: int = 0
    stable: bool = True
    clock: str = "wall"
    direct_ms: float = math.nan
    reference_ms: float | None = None
    ratio: float | None = None
    estimate_rse: float = math.nan
    wall_s: float = 0.0
    host: str = field(default_factory=socket.gethostname)
    node: str | None = None  # the Ray node that measured, when a latency meter did
    machine: str | None = None  # machine_fingerprint() of the hardware and software that measured
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["input_shape"] = _check_shape(values["input_shape"])
        return cls(**values)


# ---------------------------------------------------------------------------------------------------
# Runners: one timed forward pass per call, for each backend
# ---------------------------------------------------------------------------------------------------


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run torch's intra-op pool with ``n`` threads inside the block, and restore the old count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _random_input(shape: InputShape, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator)


Clock = Literal["thread-cpu", "wall", "cuda-events"]


class _Runner:
    """Context manager that prepares a model for a backend; calling it times one forward, in ms."""

    def __init__(self, model: nn.Module, shape: InputShape, profile: DeviceProfile, seed: int) -> None:
        self.model, self.shape, self.profile, self.seed = model, shape, profile, seed
        self._stack = ExitStack()
        # one thread: the model runs on this thread, so its CPU time is the latency on an idle core
        self.clock: Clock = "thread-cpu" if profile.threads == 1 else "wall"
        self._now = time.thread_time_ns if self.clock == "thread-cpu" else time.perf_counter_ns

    @property
    def preemption_sensitive(self) -> bool:
        """Whether an involuntary context switch during a sample spoils it (wall clock on a CPU)."""
        return self.clock == "wall"

    def __enter__(self) -> _Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __call__(self) -> float:
        raise NotImplementedError


class _TorchCpuRunner(_Runner):
    def __enter__(self) -> _Runner:
        if any(t.device.type != "cpu" for t in self.model.parameters()):
            self.model = copy.deepcopy(self.model).float().cpu()  # leave the caller's GPU model alone
        was_training = self.model.training
        self.model.eval()
        self._stack.callback(self.model.train, was_training)
        self._stack.enter_context(cpu_threads(self.profile.threads or 1))
        self._stack.enter_context(torch.inference_mode())
        self.x = _random_input(self.shape, self.seed)
        return self

    def __call__(self) -> float:
        start = self._now()
        self.model(self.x)
        return (self._now() - start) / 1e6


class _TorchCudaRunner(_Runner):
    def __enter__(self) -> _Runner:
        self.clock = "cuda-events"  # device time: host preemption does not count
        device = torch.device("cuda", self.profile.cuda_index())
        # a copy, so the caller's model stays where and how it was
        self.net = copy.deepcopy(self.model).eval().to(device, memory_format=torch.channels_last)
        self.x = _random_input(self.shape, self.seed).to(device).contiguous(memory_format=torch.channels_last)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        self._stack.callback(setattr, torch.backends.cudnn, "benchmark", previous)
        self._stack.enter_context(torch.cuda.device(device))
        self._stack.enter_context(torch.inference_mode())
        self._stack.enter_context(torch.autocast(device_type="cuda", dtype=dtype))
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        return self

    def __call__(self) -> float:
        self.start.record()
        self.net(self.x)
        self.end.record()
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))


class _OnnxRuntimeRunner(_Runner):
    def __enter__(self) -> _Runner:
        import onnxruntime as ort

        from .onnx_io import export_onnx_file

        folder = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="geonas-latency-"))
        x = _random_input(self.shape, self.seed)
        path = export_onnx_file(self.model, x, Path(folder) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.profile.threads or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.feed = {"input": x.numpy()}
        return self

    def __call__(self) -> float:
        start = self._now()
        self.session.run(None, self.feed)
        return (self._now() - start) / 1e6


_RUNNERS: dict[str, type[_Runner]] = {
    "torch-cpu": _TorchCpuRunner,
    "torch-cuda": _TorchCudaRunner,
    "onnxruntime-cpu": _OnnxRuntimeRunner,
}


# ---------------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------------

#: the reference workload: this backbone (features only, fixed random weights) on a 3-band batch of one
#: at the measured tile size. A real segmentation backbone because the ratio cancels contention best
#: when the reference spends its time like the models do -- partly streaming weights (memory-bound,
#: at small tiles), partly convolving activations (compute-bound) -- and resnet18 is the space's default.
REFERENCE_BACKBONE = "resnet18"
_CALIBRATION: dict[tuple[str, int, int], float] = {}


def reference_shape(input_shape: Any) -> InputShape:
    """The reference's input for a measured shape: batch 1, 3 bands, the same height and width."""
    shape = _check_shape(input_shape)
    return (1, 3, shape[2], shape[3])


@lru_cache(maxsize=1)
def _reference_net() -> nn.Module:
    """The reference backbone with the same weights in every process (seeded, no download)."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        net = timm.create_model(REFERENCE_BACKBONE, features_only=True, pretrained=False)
    return net.eval()


def _cpu_twin(profile: DeviceProfile) -> DeviceProfile:
    return get_profile(f"cpu-{profile.threads or 1}threads")


def reference_latency(
    profile: str | DeviceProfile, input_shape: Any = (1, 3, 32, 32), *, refresh: bool = False
) -> float:
    """The reference's latency (ms) under ``profile``'s CPU threads here, for ``input_shape``'s tile size.

    Measured once per process and tile size (``refresh`` measures again) with the direct estimator and
    many repeats; pass the value to :func:`measure_latency` as ``reference=`` to share one calibration
    between processes (the latency meter stores it in its cache file).
    """
    twin = _cpu_twin(get_profile(profile))
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


def _timed_block(runners: list[_Runner], size: int) -> tuple[list[list[float]], int]:
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
    shape = _check_shape(input_shape)
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
        runner = stack.enter_context(_RUNNERS[prof.backend](model, shape, prof, seed))
        runners = [runner]
        if reference_ms is not None:
            runners.append(
                stack.enter_context(
                    _TorchCpuRunner(_reference_net(), reference_shape(shape), _cpu_twin(prof), 0)
                )
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


# ---------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown-cpu"


@lru_cache(maxsize=64)
def machine_fingerprint(profile: str | DeviceProfile = "cpu-1threads") -> str:
    """Which hardware and software a measurement under ``profile`` comes from, as a short stable id.

    A profile name says how to measure (``cpu-1threads``), not on what: the same name on another CPU
    model, core count, torch or ONNX Runtime build gives other numbers. The fingerprint covers those
    (and the GPU model and CUDA build for CUDA profiles), so a latency cache never answers for
    hardware that did not measure: ``"<cpu model>-<N>cpu-<hash>"``.
    """
    import hashlib
    import platform

    prof = get_profile(profile)
    parts = [platform.machine(), _cpu_model(), f"{_usable_cpus()}cpu", f"torch-{torch.__version__}"]
    if prof.backend == "torch-cuda":
        parts += [prof.device_name or ",".join(_visible_cuda_names()) or "no-gpu", f"cuda-{torch.version.cuda}"]
    if prof.backend == "onnxruntime-cpu":
        try:
            import onnxruntime

            parts.append(f"onnxruntime-{onnxruntime.__version__}")
        except ImportError:
            parts.append("onnxruntime-missing")
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:10]
    return f"{normalise_device_name(parts[1])[:40]}-{_usable_cpus()}cpu-{digest}"


@dataclass(frozen=True)
class LatencyKey:
    """What makes two measurements the same: architecture, canonical profile name, input shape, and
    the machine (:func:`machine_fingerprint`) that measured."""

    arch_hash: str
    profile: str
    input_shape: InputShape
    machine: str = ""

    @classmethod
    def of(
        cls, arch_hash: str, profile: str | DeviceProfile, input_shape: Any, machine: str | None = None
    ) -> LatencyKey:
        """The key for a measurement made here (``machine`` defaults to this machine's fingerprint)."""
        prof = get_profile(profile)
        return cls(str(arch_hash), prof.name, _check_shape(input_shape), machine or machine_fingerprint(prof))

    @property
    def shape_text(self) -> str:
        return "x".join(str(d) for d in self.input_shape)


class LatencyCache:
    """Latencies persisted in a SQLite file, shared safely by several processes on one machine.

    SQLite's own locking (WAL journal, busy timeout) makes concurrent readers and writers safe; the
    object holds only the path, so it pickles into Ray actors and tasks. Put the file on a local disk
    of the node that measures (SQLite locking is unreliable on network filesystems).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            # ``latency`` (no machine column) is what older versions wrote: never read, since a profile
            # name alone does not say which hardware measured
            db.execute(
                "CREATE TABLE IF NOT EXISTS measurements ("
                " arch_hash TEXT NOT NULL, profile TEXT NOT NULL, machine TEXT NOT NULL, input_shape TEXT NOT NULL,"
                " result TEXT NOT NULL, measured_at TEXT NOT NULL,"
                " PRIMARY KEY (arch_hash, profile, machine, input_shape))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS reference_calibration (profile TEXT NOT NULL, host TEXT NOT NULL,"
                " tile TEXT NOT NULL, reference_ms REAL NOT NULL, measured_at TEXT NOT NULL,"
                " PRIMARY KEY (profile, host, tile))"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def get(self, key: LatencyKey) -> LatencyResult | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT result FROM measurements WHERE arch_hash=? AND profile=? AND machine=? AND input_shape=?",
                (key.arch_hash, key.profile, key.machine, key.shape_text),
            ).fetchone()
        return LatencyResult.from_dict(json.loads(row[0])) if row else None

    def put(self, key: LatencyKey, result: LatencyResult) -> None:
        if result.profile != key.profile or tuple(result.input_shape) != key.input_shape:
            raise ValueError(
                f"result for {result.profile} {list(result.input_shape)} filed under {key}: "
                "key and measurement disagree"
            )
        data = replace(result, cached=False, machine=result.machine or key.machine).to_dict()
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
                (key.arch_hash, key.profile, key.machine, key.shape_text, json.dumps(data), result.measured_at),
            )

    def reference_ms(
        self, profile: str | DeviceProfile, input_shape: Any, measure: Callable[[], float]
    ) -> float:
        """This host's calibrated reference latency for ``profile`` and the tile size: stored once, shared.

        Every process measuring on this host then normalises by the same number, so their results are
        comparable. When two processes calibrate at once, the first to store wins and both use it.
        """
        shape = reference_shape(input_shape)
        row_key = (_cpu_twin(get_profile(profile)).name, socket.gethostname(), f"{shape[2]}x{shape[3]}")
        query = "SELECT reference_ms FROM reference_calibration WHERE profile=? AND host=? AND tile=?"
        with self._connect() as db:
            row = db.execute(query, row_key).fetchone()
        if row:
            return float(row[0])
        value = float(measure())
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO reference_calibration VALUES (?, ?, ?, ?, ?)",
                (*row_key, value, _utc_now()),
            )
            return float(db.execute(query, row_key).fetchone()[0])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, LatencyKey) and self.get(key) is not None

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def entries(self, profile: str | None = None) -> list[tuple[LatencyKey, LatencyResult]]:
        """Every cached measurement (of one profile, if given)."""
        query = "SELECT arch_hash, profile, machine, input_shape, result FROM measurements"
        args: tuple[str, ...] = ()
        if profile is not None:
            query, args = query + " WHERE profile=?", (get_profile(profile).name,)
        with self._connect() as db:
            rows = db.execute(query, args).fetchall()
        return [
            (
                LatencyKey(h, p, _check_shape(s.split("x")), m),
                LatencyResult.from_dict(json.loads(r)),
            )
            for h, p, m, s, r in rows
        ]


def cached_latency(
    cache: LatencyCache | None, key: LatencyKey, measure_fn: Callable[[], LatencyResult]
) -> LatencyResult:
    """The cached result for ``key`` (marked ``cached=True``), else ``measure_fn()``, stored."""
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return replace(hit, cached=True)
    result = measure_fn()
    result = result if result.machine else replace(result, machine=key.machine)
    if cache is not None:
        cache.put(key, result)
    return result
