"""Export trained models: weights as safetensors, and ONNX checked against PyTorch.

Safetensors because a weights file is data, never code (unlike a pickle), and carries a string-to-string
metadata header in which the architecture, its hash and the band names travel with the weights. ONNX so
a model can be deployed and timed without this codebase; every export is run once in ONNX Runtime on a
random input and compared with PyTorch, and the difference is reported (and checked against a
tolerance), so a silently wrong export cannot reach the leaderboard.

Both writers are atomic (temporary name, then rename): a killed export never leaves a half file under
the final name. :func:`export_model` writes a fine-tuned stage-2 model's folder with both, and a
``model.json`` that says what the model is, what data it takes and how it was trained.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.errors import DataError, GeonasError, SpecError
from search_spaces.onnx_io import DEFAULT_OPSET, export_onnx_file

__all__ = ["ExportReport", "save_weights", "load_weights", "read_metadata", "export_onnx", "export_model"]


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s state (parameters and buffers) to a safetensors file, atomically.

    ``metadata`` must map strings to strings (the format's rule); put JSON in a value for structure.
    Tensors shared between modules (tied weights) are stored once.
    """
    from safetensors.torch import save_model

    metadata = dict(metadata or {})
    bad = {str(k): type(v).__name__ for k, v in metadata.items() if not isinstance(v, str)}
    if bad:
        raise SpecError(f"safetensors metadata must map str to str; not strings: {bad} (json.dumps them)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_model(model, tmp, metadata=metadata or None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata header of a safetensors file, without loading any tensor."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"weights file {path} does not exist; export the model first")
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> dict[str, str]:
    """Load a safetensors file into ``model`` (on the model's device) and return its metadata.

    With ``strict`` every tensor must match by name and shape; a mismatch names the offending keys.
    """
    from safetensors.torch import load_model

    metadata = read_metadata(path)
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        load_model(model, str(path), strict=strict, device=str(device))
    except RuntimeError as exc:
        raise SpecError(
            f"weights {path} do not fit this model (same architecture, bands and classes?): {exc}"
        ) from None
    return metadata


@dataclass(frozen=True)
class ExportReport:
    """What an ONNX export produced and how closely ONNX Runtime reproduces PyTorch."""

    path: str
    opset: int
    input_shape: tuple[int, int, int, int]
    output_shapes: list[list[int]]
    max_abs_diff: float
    output_scale: float  # max |PyTorch output|: puts max_abs_diff in proportion
    tolerance: float  # atol + rtol * output_scale
    passed: bool
    size_bytes: int
    export_s: float
    onnxruntime_version: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    check: bool = True,
    seed: int = 0,
) -> ExportReport:
    """Export ``model`` for ``input_shape`` to ``path``; run it in ONNX Runtime and compare with PyTorch.

    The model is exported in eval mode as a float32 CPU copy (the caller's model is not touched), for
    the fixed input shape, which fixes every resampling size. With ``check``, a difference above
    ``atol + rtol * max|output|`` raises :class:`GeonasError` (the file stays, for inspection).
    """
    import onnxruntime as ort

    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise SpecError(f"input shape must be 4 positive integers (B, C, H, W), got {list(input_shape)}")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    started = time.perf_counter()
    out_path = export_onnx_file(model, x, path, opset=opset)
    export_s = time.perf_counter() - started

    reference = copy.deepcopy(model).float().cpu().eval()
    with torch.inference_mode():
        expected = reference(x)
    expected_list = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(out_path), options, providers=["CPUExecutionProvider"])
    actual = session.run(None, {"input": x.numpy()})
    if len(actual) != len(expected_list):
        raise GeonasError(f"ONNX model {out_path} has {len(actual)} outputs, PyTorch {len(expected_list)}")
    diff = 0.0
    scale = 0.0
    for got, want in zip(actual, expected_list, strict=True):
        want_np = want.numpy()
        if got.shape != want_np.shape:
            raise GeonasError(
                f"ONNX output shape {list(got.shape)} differs from PyTorch's {list(want_np.shape)}"
            )
        diff = max(diff, float(np.max(np.abs(got - want_np))))
        scale = max(scale, float(np.max(np.abs(want_np))))
    tolerance = atol + rtol * scale
    report = ExportReport(
        path=str(out_path),
        opset=opset,
        input_shape=shape,  # type: ignore[arg-type]
        output_shapes=[list(o.shape) for o in actual],
        max_abs_diff=diff,
        output_scale=scale,
        tolerance=tolerance,
        passed=bool(np.isfinite(diff) and diff <= tolerance),
        size_bytes=out_path.stat().st_size,
        export_s=export_s,
        onnxruntime_version=ort.__version__,
    )
    if check and not report.passed:
        raise GeonasError(
            f"ONNX export {out_path} differs from PyTorch by {diff:.3g} (tolerance {tolerance:.3g}); "
            f"an op in this model does not export faithfully at opset {opset}: try another opset"
        )
    return report


def export_model(
    model: nn.Module,
    folder: str | os.PathLike,
    input_shape: tuple[int, int, int, int],
    descriptor: dict[str, Any],
    data: dict[str, Any],
    training: dict[str, Any],
) -> tuple[dict[str, str], ExportReport]:
    """Write a fine-tuned model's files to ``folder``: ``weights.safetensors`` (the descriptor and the
    data contract in its metadata), ``model.onnx`` for ``input_shape`` (checked against PyTorch, see
    :func:`export_onnx`) and ``model.json`` (descriptor, data and training settings).

    Returns the files' paths by name, as the store registers them, and the ONNX report.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = save_weights(
        model,
        folder / "weights.safetensors",
        {"descriptor": json.dumps(descriptor), "data": json.dumps(data)},
    )
    onnx = export_onnx(model, input_shape, folder / "model.onnx")
    (folder / "model.json").write_text(
        json.dumps({"descriptor": descriptor, "data": data, "training": training}, indent=2)
    )
    artifacts = {
        "weights.safetensors": str(weights),
        "model.onnx": str(folder / "model.onnx"),
        "model.json": str(folder / "model.json"),
    }
    return artifacts, onnx
