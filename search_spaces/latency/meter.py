"""A Ray actor that measures latency on its own, so measurements never share cores with training.

Trials do not time models themselves: a training worker next door would make the number meaningless.
Each device profile gets one named actor per Ray namespace (``latency-meter/<profile>``) that builds the
model, consults the persistent :class:`~search_spaces.latency.cache.LatencyCache`, measures one model at a
time (an actor runs one call at a time), and says which profile, node and process measured what.

Where the meter runs is decided by Ray resources:

* **A dedicated resource (default ``latency_meter``).** The meter asks for one unit of it *and* for the
  profile's CPU threads (or one GPU), so the Ray scheduler keeps training off those CPUs and at most
  one meter runs per unit offered. A cluster offers it on the node(s) chosen for measuring:
  ``ray start --resources='{"latency_meter": 1}'``; in KubeRay, the worker group's
  ``rayStartParams: {resources: '"{\\"latency_meter\\": 1}"'}``; for a local Ray,
  ``ray.init(resources={"latency_meter": 1})``.
* **Fallback.** When no node offers the resource (a laptop, the test cluster), the meter holds only its
  CPU threads (``num_cpus``) -- still reserved from training by the scheduler -- unless
  ``MeterPlacement(fallback=False)``, which makes a missing resource an error.

Ray reserves CPUs logically, not by pinning; on a node where other processes run outside Ray, numbers
are still noisier, which the harness' estimator and the ``cv`` field account for.

The cache file must be on a disk the meter's node can lock (SQLite): a local path on that node.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from torch import nn

from search_spaces.errors import ClusterError, SpecError
from search_spaces.latency.cache import LatencyCache, LatencyKey, cached_latency, model_key
from search_spaces.latency.harness import measure_latency, reference_latency
from search_spaces.latency.profiles import DeviceProfile, get_profile, list_profiles

__all__ = [
    "request_remote",
    "LATENCY_RESOURCE",
    "MeterPlacement",
    "LatencyMeter",
    "meter_name",
    "meter_actor_options",
    "get_latency_meter",
    "model_key",
]

LATENCY_RESOURCE = "latency_meter"


@dataclass(frozen=True)
class MeterPlacement:
    """Where a meter may run and what it holds there (see the module doc)."""

    resource: str | None = LATENCY_RESOURCE  # custom resource to hold one unit of; None: CPUs only
    fallback: bool = True  # no node offers ``resource``: hold CPUs only instead of failing
    num_cpus: float | None = None  # default: the profile's thread count (1 for GPU / ONNX profiles)
    num_gpus: float | None = None  # default: 1 for CUDA profiles, else 0
    namespace: str = "geonas"
    lifetime: str | None = None  # "detached" keeps the meter alive after the creating job ends
    harness: dict[str, Any] = field(default_factory=dict)  # measure_latency keyword arguments


def meter_name(profile: str | DeviceProfile) -> str:
    return f"latency-meter/{get_profile(profile).name}"


def meter_actor_options(profile: str | DeviceProfile, placement: MeterPlacement | None = None) -> dict:
    """Ray actor options for a meter of ``profile``: CPUs/GPU, and the dedicated resource if offered."""
    placement = placement or MeterPlacement()
    prof = get_profile(profile)
    cuda = prof.backend == "torch-cuda"
    cpus = placement.num_cpus if placement.num_cpus is not None else float(prof.threads or 1)
    gpus = placement.num_gpus if placement.num_gpus is not None else (1.0 if cuda else 0.0)
    options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
    if placement.resource:
        offered = ray.cluster_resources().get(placement.resource, 0.0)
        if offered >= 1:
            options["resources"] = {placement.resource: 1}
        elif not placement.fallback:
            raise ClusterError(
                f"no node of this Ray cluster offers the {placement.resource!r} resource the latency meter "
                f"needs; start a measuring node with ray start --resources='{{\"{placement.resource}\": 1}}' "
                "or allow the fallback (MeterPlacement(fallback=True))"
            )
    return options


def _as_descriptor(arch_or_descriptor: dict[str, Any]) -> dict[str, Any]:
    if "arch" in arch_or_descriptor or "baseline" in arch_or_descriptor:
        return arch_or_descriptor
    return {"arch": arch_or_descriptor}  # a bare ArchSpec.to_dict()


@ray.remote(max_restarts=1)
class LatencyMeter:
    """Measures models for one device profile, one at a time, through the latency cache."""

    def __init__(self, profile: str, cache_path: str | None, harness: dict[str, Any] | None = None) -> None:
        import torch

        self.profile = get_profile(profile)
        self.cache = LatencyCache(cache_path) if cache_path else None
        self.cache_path = cache_path
        self.harness = dict(harness or {})
        self.measured = 0
        self.cache_hits = 0
        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        try:  # one inter-op thread; only possible before any parallel work in this process
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass

    def _provenance(self) -> dict[str, Any]:
        """Who answered (the result's own ``node`` and ``host`` say who measured, maybe earlier)."""
        return {
            "meter": meter_name(self.profile),
            "meter_node_id": self.node_id,
            "meter_node_ip": self.node_ip,
            "meter_pid": os.getpid(),
        }

    def _reference_ms(self, input_shape: tuple[int, ...]) -> float:
        """The host's calibrated reference latency, shared through the cache file when there is one."""
        if self.cache is None:
            return reference_latency(self.profile, input_shape)
        return self.cache.reference_ms(self.profile, input_shape, lambda: reference_latency(self.profile, input_shape))

    def _measure(
        self, key: LatencyKey, factory: Callable[[], nn.Module], input_shape: tuple[int, ...], fresh: bool = False
    ) -> dict[str, Any]:
        ok, why = self.profile.availability()
        if not ok:
            raise SpecError(
                f"the latency meter on node {self.node_ip} cannot measure {self.profile.name}: {why}; "
                f"available there: {', '.join(list_profiles(available_only=True))}",
                field="device",
            )

        def measure():
            self.measured += 1
            harness = dict(self.harness)
            if self.profile.backend != "torch-cuda" and harness.get("reference", "auto") == "auto":
                harness["reference"] = self._reference_ms(input_shape)
            result = measure_latency(factory(), input_shape, self.profile, **harness)
            return replace(result, node=self.node_id)  # cached with it: who measured stays known

        result = measure() if fresh else cached_latency(self.cache, key, measure)
        if fresh:
            result = replace(result, machine=key.machine)
        self.cache_hits += int(result.cached)
        return {**result.to_dict(), "key": key.arch_hash, **self._provenance()}

    def measure(
        self,
        arch: dict[str, Any],
        in_chans: int,
        num_classes: int,
        input_shape: tuple[int, int, int, int] | list[int],
    ) -> dict[str, Any]:
        """Latency of a searched model (``ArchSpec.to_dict()``) or a descriptor (``{"arch"|"baseline"}``).

        Returns :meth:`LatencyResult.to_dict` (``cached``; ``node`` and ``host``: who measured) plus
        ``key`` (the cache's architecture key) and ``meter*`` (who answered).
        """
        from search_spaces.builder import model_from_descriptor

        descriptor = _as_descriptor(arch)
        shape = tuple(int(d) for d in input_shape)
        if len(shape) != 4 or shape[1] != int(in_chans):
            raise SpecError(
                f"input shape {list(shape)} must be (batch, bands, height, width) with {in_chans} bands",
                field="input_shape",
            )
        key = LatencyKey.of(model_key(descriptor, num_classes), self.profile, shape)
        return self._measure(key, lambda: model_from_descriptor(descriptor, int(in_chans), int(num_classes)), shape)

    def measure_module(
        self,
        key: str,
        factory: Callable[[], nn.Module],
        input_shape: tuple[int, int, int, int] | list[int],
        fresh: bool = False,
    ) -> dict[str, Any]:
        """Latency of any model ``factory()`` builds, cached under ``key`` (the caller's identity for it).

        ``fresh`` measures now, on this meter's machine, neither reading nor writing the cache: what
        stage 2 does to check a fine-tuned model against the number stage 1 ranked it by.
        """
        shape = tuple(int(d) for d in input_shape)
        return self._measure(LatencyKey.of(key, self.profile, shape), factory, shape, fresh=fresh)

    def warm_up(self, input_shape: tuple[int, int, int, int] | list[int]) -> float | None:
        """Calibrate the reference for ``input_shape`` now (CPU profiles), so no trial waits for it."""
        if self.profile.backend == "torch-cuda" or self.harness.get("reference", "auto") != "auto":
            return None
        return self._reference_ms(tuple(int(d) for d in input_shape))

    def stats(self) -> dict[str, Any]:
        """How many models this meter measured and how many it answered from the cache."""
        return {
            "profile": self.profile.name,
            "measured": self.measured,
            "cache_hits": self.cache_hits,
            "cache_path": self.cache_path,
            **self._provenance(),
        }


def get_latency_meter(
    profile: str | DeviceProfile,
    cache_path: str | os.PathLike | None,
    placement: MeterPlacement | None = None,
) -> Any:
    """The meter actor for ``profile`` in the placement's namespace, created on first use.

    Every caller in the namespace (the experiment driver, each trial) gets the same actor, so requests
    queue and are measured one at a time. An existing meter keeps the cache path it was created with.
    """
    if not ray.is_initialized():
        raise ClusterError("Ray is not initialised; connect to the cluster (ray.init) before measuring")
    placement = placement or MeterPlacement()
    prof = get_profile(profile)
    options = meter_actor_options(prof, placement)
    return LatencyMeter.options(
        name=meter_name(prof),
        namespace=placement.namespace,
        get_if_exists=True,
        lifetime=placement.lifetime,
        **options,
    ).remote(prof.name, None if cache_path is None else str(cache_path), placement.harness)


def request_remote(
    arch: dict[str, Any],
    in_chans: int,
    num_classes: int,
    input_shape: tuple[int, int, int, int] | list[int],
    profile: str | DeviceProfile,
    cache_path: str | os.PathLike | None,
    placement: MeterPlacement | None = None,
) -> ray.ObjectRef:
    """Queue a measurement on the profile's meter and return at once (``ray.get`` the answer later).

    The meter runs on cores of its own, so a trial that does not need the number before training
    (no hard target to prune against) trains while its latency is being measured.
    """
    meter = get_latency_meter(profile, cache_path, placement)
    return meter.measure.remote(arch, in_chans, num_classes, list(input_shape))
