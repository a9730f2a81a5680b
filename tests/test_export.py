"""Export: safetensors round trip, and ONNX matching PyTorch for every op, level set and baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from search_spaces.baselines import create_baseline
from search_spaces.builder import build_model
from search_spaces.errors import DataError, SpecError
from search_spaces.nasfpn import ArchSpec, Cell
from search_spaces.ops import list_ops
from trainers.export import export_onnx, load_weights, read_metadata, save_weights

torch.set_num_threads(1)


def arch_with(op: str, levels: tuple[int, ...] = (2, 3, 4, 5), channels: int = 8) -> ArchSpec:
    """Cells that resample across levels both ways, with ``op`` in every cell."""
    n = len(levels)
    cells = [
        Cell(0, n - 1, levels[min(1, n - 1)], op),  # finest with coarsest, at the second level
        Cell(n - 1, n, levels[0], op),  # coarse with the new cell, up to the finest
        Cell(1 if n > 1 else 0, n + 1, levels[-1], op),  # down to the coarsest
    ]
    return ArchSpec("resnet18", levels, channels, tuple(cells))


def check_export(model: torch.nn.Module, shape: tuple[int, int, int, int], path: Path) -> None:
    report = export_onnx(model, shape, path)
    assert report.passed and report.max_abs_diff <= report.tolerance
    assert report.size_bytes == path.stat().st_size > 0
    assert report.output_shapes[0][0] == shape[0] and report.output_shapes[0][2:] == list(shape[2:])


@pytest.mark.parametrize("op", list_ops())
def test_onnx_matches_pytorch_for_every_op(op: str, tmp_path: Path) -> None:
    model = build_model(arch_with(op), in_chans=4, num_classes=3)
    check_export(model, (1, 4, 64, 64), tmp_path / f"{op}.onnx")


@pytest.mark.parametrize(
    ("levels", "bands", "size"),
    [((2, 5), 3, 48), ((3, 4, 5), 13, 40), ((2, 3), 4, 36), ((3, 5), 3, 32)],
)
def test_onnx_matches_pytorch_for_level_sets_and_odd_tile_sizes(levels, bands, size, tmp_path: Path) -> None:
    model = build_model(arch_with("concat_conv", levels), in_chans=bands, num_classes=2)
    check_export(model, (1, bands, size, size), tmp_path / "model.onnx")


@pytest.mark.parametrize("name", ["unet", "fpn"])
def test_onnx_matches_pytorch_for_baselines(name: str, tmp_path: Path) -> None:
    model = create_baseline(name, "resnet18", in_chans=4, num_classes=3)
    check_export(model, (1, 4, 64, 64), tmp_path / f"{name}.onnx")


def test_export_leaves_the_callers_model_alone(tmp_path: Path) -> None:
    model = build_model(arch_with("sum"), in_chans=3, num_classes=2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, (2, 3, 32, 32), tmp_path / "m.onnx")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left behind


def test_safetensors_round_trip_restores_weights_outputs_and_metadata(tmp_path: Path) -> None:
    arch = arch_with("global_attention")
    model = build_model(arch, in_chans=4, num_classes=3).eval()
    with torch.no_grad():  # make BN statistics non-default so buffers are tested too
        model(torch.randn(2, 4, 32, 32))
    meta = {"arch": arch.canonical_json(), "arch_hash": arch.hash, "bands": json.dumps(["r", "g", "b", "n"])}
    path = save_weights(model, tmp_path / "w" / "model.safetensors", meta)
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]

    fresh = build_model(ArchSpec.from_dict(json.loads(read_metadata(path)["arch"])), 4, 3).eval()
    x = torch.randn(1, 4, 32, 32)
    assert not torch.allclose(fresh(x), model(x))
    assert load_weights(fresh, path) == meta
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert torch.equal(fresh(x), model(x))


def test_safetensors_errors_say_what_is_wrong(tmp_path: Path) -> None:
    model = build_model(arch_with("sum"), in_chans=3, num_classes=2)
    with pytest.raises(SpecError, match="str to str"):
        save_weights(model, tmp_path / "m.safetensors", {"epochs": 3})  # type: ignore[dict-item]
    path = save_weights(model, tmp_path / "m.safetensors")
    other = build_model(arch_with("sum"), in_chans=4, num_classes=2)  # a different stem
    with pytest.raises(SpecError, match="do not fit"):
        load_weights(other, path)
    with pytest.raises(DataError, match="does not exist"):
        load_weights(model, tmp_path / "missing.safetensors")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_export_and_weights_from_a_model_on_the_gpu(tmp_path: Path) -> None:
    model = build_model(arch_with("global_attention"), in_chans=4, num_classes=3).cuda().eval()
    check_export(model, (1, 4, 64, 64), tmp_path / "gpu.onnx")
    assert next(model.parameters()).is_cuda  # the export worked on a copy
    path = save_weights(model, tmp_path / "gpu.safetensors", {"device": "cuda"})
    fresh = build_model(arch_with("global_attention"), in_chans=4, num_classes=3).cuda().eval()
    assert load_weights(fresh, path) == {"device": "cuda"}
    x = torch.randn(1, 4, 64, 64, device="cuda")
    assert torch.equal(fresh(x), model(x))
