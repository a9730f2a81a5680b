"""Which hardware and software measured: a profile name says how, :func:`machine_fingerprint` says on what."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .profiles import DeviceProfile, get_profile, normalise_device_name, usable_cpus, visible_cuda_names

__all__ = ["machine_fingerprint"]


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

    import torch

    prof = get_profile(profile)
    parts = [platform.machine(), _cpu_model(), f"{usable_cpus()}cpu", f"torch-{torch.__version__}"]
    if prof.backend == "torch-cuda":
        parts += [prof.device_name or ",".join(visible_cuda_names()) or "no-gpu", f"cuda-{torch.version.cuda}"]
    if prof.backend == "onnxruntime-cpu":
        try:
            import onnxruntime

            parts.append(f"onnxruntime-{onnxruntime.__version__}")
        except ImportError:
            parts.append("onnxruntime-missing")
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:10]
    return f"{normalise_device_name(parts[1])[:40]}-{usable_cpus()}cpu-{digest}"
