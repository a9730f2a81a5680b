"""Runners: prepare a model for one backend, then time one forward pass per call (ms)."""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .profiles import DeviceProfile
from .results import InputShape

__all__ = ["Clock", "Runner", "RUNNERS", "TorchCpuRunner", "cpu_threads"]


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


class Runner:
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

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def __call__(self) -> float:
        raise NotImplementedError


class TorchCpuRunner(Runner):
    def __enter__(self) -> Runner:
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


class _TorchCudaRunner(Runner):
    def __enter__(self) -> Runner:
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


class _OnnxRuntimeRunner(Runner):
    def __enter__(self) -> Runner:
        import onnxruntime as ort

        from ..onnx_io import export_onnx_file

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


RUNNERS: dict[str, type[Runner]] = {
    "torch-cpu": TorchCpuRunner,
    "torch-cuda": _TorchCudaRunner,
    "onnxruntime-cpu": _OnnxRuntimeRunner,
}
