"""Write a model to an ONNX file, the one way both the exporter and the ONNX Runtime latency profile do it.

It lives here, below ``trainers/``, because the latency harness (``search_spaces``) needs it for the
``onnxruntime-cpu`` profile and ``trainers.export`` builds its checked export on top of it.

The TorchScript-based exporter (``dynamo=False``) is used on purpose: it needs nothing beyond torch,
handles every op of the space (``interpolate`` to a size read from another tensor, ``max_pool2d`` with
``ceil_mode``, global pooling) and smp's decoders, and exports shapes as traced for one fixed input
shape, which is what a latency profile and a deployment tile size want.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["DEFAULT_OPSET", "export_onnx_file", "output_names"]

DEFAULT_OPSET = 17


def output_names(output: object) -> list[str]:
    """``["logits"]`` for a tensor output, ``["output_0", ...]`` for a list or tuple of them."""
    if isinstance(output, torch.Tensor):
        return ["logits"]
    if isinstance(output, list | tuple):
        return [f"output_{i}" for i in range(len(output))]
    raise TypeError(f"cannot export a model whose output is {type(output).__name__}; return tensors")


def export_onnx_file(
    model: nn.Module, example: torch.Tensor, path: str | os.PathLike, opset: int = DEFAULT_OPSET
) -> Path:
    """Export ``model`` (a CPU float32 copy, in eval mode) for ``example``'s shape to ``path``, atomically.

    The caller's model is not modified: export runs on a deep copy, so a model that lives on a GPU or in
    training mode stays as it was. The file appears under its name only once complete (temp + rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).float().cpu().eval()
    example = example.detach().float().cpu().contiguous()
    with torch.inference_mode():
        names = output_names(cpu_model(example))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
            torch.onnx.export(
                cpu_model,
                (example,),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=names,
                do_constant_folding=True,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
