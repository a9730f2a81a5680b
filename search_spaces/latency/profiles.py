"""Device profiles: named ways to measure latency (``cpu-4threads``, ``cuda:nvidia-h100-80gb-hbm3``,
``onnxruntime-cpu``), so numbers from different hardware never mix on a leaderboard.

A profile's canonical name is part of every result and every cache key. This module imports without
torch: the API checks a device name at submission (:func:`check_profile_name`) with the same grammar the
meter uses; only asking which GPUs are visible imports torch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import SpecError

__all__ = [
    "Backend",
    "DeviceProfile",
    "get_profile",
    "check_profile_name",
    "cpu_twin",
    "list_profiles",
    "list_profile_patterns",
    "register_profile",
    "normalise_device_name",
    "usable_cpus",
    "visible_cuda_names",
]

Backend = Literal["torch-cpu", "torch-cuda", "onnxruntime-cpu"]


def normalise_device_name(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` → ``"nvidia-h100-80gb-hbm3"``: stable, URL- and file-safe."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def visible_cuda_names() -> list[str]:
    """Normalised names of the GPUs this process sees (imports torch)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [normalise_device_name(torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]


def usable_cpus() -> int:
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
            cpus = usable_cpus()
            if self.threads is not None and self.threads > cpus:
                return False, f"{self.name} needs {self.threads} CPU threads; this process may use {cpus}"
            if self.backend == "onnxruntime-cpu":
                try:
                    import onnxruntime  # noqa: F401
                except ImportError:
                    return False, "onnxruntime is not installed"
            return True, ""
        names = visible_cuda_names()
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
        names = visible_cuda_names()
        if self.device_name is None:
            return 0
        return names.index(self.device_name)


@dataclass(frozen=True)
class _Family:
    pattern: str  # how users write it, e.g. "cpu-<N>threads"
    regex: re.Pattern[str]
    factory: Callable[[re.Match[str]], DeviceProfile]
    examples: Callable[[], list[str]]
    probes: bool  # the factory asks this machine (which GPU is "cuda"?); the name alone is still valid


_FAMILIES: dict[str, _Family] = {}


def register_profile(
    pattern: str, regex: str, examples: Callable[[], list[str]] | None = None, *, probes: bool = False
) -> Callable[[Callable[[re.Match[str]], DeviceProfile]], Callable[[re.Match[str]], DeviceProfile]]:
    """Register a family of profiles: names matching ``regex`` (in full) are built by the factory.

    ``probes``: the factory inspects this machine's hardware to name the profile, so a check of the
    name alone (:func:`check_profile_name`, in the API) does not call it.
    """

    def decorator(factory: Callable[[re.Match[str]], DeviceProfile]) -> Callable[..., DeviceProfile]:
        if pattern in _FAMILIES:
            raise ValueError(f"device profile {pattern!r} is registered twice")
        family = _Family(pattern, re.compile(regex), factory, examples or (lambda: [pattern]), probes)
        _FAMILIES[pattern] = family
        return factory

    return decorator


def _threads(match: re.Match[str]) -> int:
    n = int(match.group("n"))
    if not 1 <= n <= 512:
        raise SpecError(f"a thread count must be between 1 and 512, got {n}", field="device")
    return n


def _cpu_examples() -> list[str]:
    counts = sorted({1, 2, 4, usable_cpus()})
    return [f"cpu-{n}threads" for n in counts]


@register_profile("cpu-<N>threads", r"cpu-(?P<n>\d+)threads?", _cpu_examples)
def _cpu_profile(match: re.Match[str]) -> DeviceProfile:
    n = _threads(match)
    return DeviceProfile(f"cpu-{n}threads", "torch-cpu", threads=n)


@register_profile("cuda", r"cuda(:0)?", lambda: ["cuda"], probes=True)
def _cuda_profile(match: re.Match[str]) -> DeviceProfile:
    names = visible_cuda_names()
    if not names:
        return DeviceProfile("cuda", "torch-cuda")
    return DeviceProfile(f"cuda:{names[0]}", "torch-cuda", device_name=names[0])


@register_profile("cuda:<device name>", r"cuda:(?P<dev>.*[^\d].*)", lambda: [f"cuda:{n}" for n in visible_cuda_names()])
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


def _family_of(name: str) -> tuple[_Family, re.Match[str]] | None:
    text = str(name).strip().lower()
    for family in _FAMILIES.values():
        match = family.regex.fullmatch(text)
        if match:
            return family, match
    return None


def _unknown(name: str, here: str = "") -> SpecError:
    return SpecError(
        f"unknown device profile {name!r}; valid profiles: {', '.join(list_profile_patterns())}{here}",
        field="device",
    )


def get_profile(name: str | DeviceProfile) -> DeviceProfile:
    """The profile called ``name`` (canonicalised); unknown names raise a :class:`SpecError`."""
    if isinstance(name, DeviceProfile):
        return name
    found = _family_of(name)
    if found is None:
        raise _unknown(name, f" (available here: {', '.join(list_profiles(available_only=True))})")
    family, match = found
    return family.factory(match)


def check_profile_name(name: str) -> str:
    """Check ``name`` by the profile grammar alone, without torch or hardware; returns it canonical.

    What the API runs at submission: a name no family matches, or a bad thread count, is a
    :class:`SpecError` naming the valid patterns. Whether this machine can measure with it is asked
    where it will be measured (:meth:`DeviceProfile.availability`).
    """
    found = _family_of(name)
    if found is None:
        raise _unknown(name)
    family, match = found
    return str(name).strip().lower() if family.probes else family.factory(match).name


def cpu_twin(profile: DeviceProfile) -> DeviceProfile:
    """The CPU profile with ``profile``'s thread count (a GPU profile's reference runs on one CPU thread)."""
    return get_profile(f"cpu-{profile.threads or 1}threads")
