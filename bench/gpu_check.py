"""Exercise the CUDA paths that CI (CPU only) never runs, and report what they did.

    python bench/gpu_check.py [--out bench/results/gpu_check.json]

Needs torch, timm, onnxruntime and safetensors only (no Ray, no rasterio), so it runs on a bare GPU
machine: every op of the search space forward on CUDA with channels_last and bf16 autocast (checked
against fp32 CPU), the training loop's CUDA path (loss must fall), the latency harness's ``cuda``
profile against ``cpu-1threads``, ONNX export of a CUDA-trained model, and a CSF step with AMP.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

# bench/csf.py would shadow the csf package: this script's folder is not a source of modules
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.provenance import stamp  # noqa: E402  (standard library only: no Ray; commit "unknown" outside git)


def section(results: dict, name: str):
    def wrap(fn):
        started = time.perf_counter()
        try:
            results[name] = {"ok": True, **(fn() or {})}
        except Exception as exc:  # noqa: BLE001 - report every section, whatever breaks
            results[name] = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-2000:],
            }
        results[name]["seconds"] = round(time.perf_counter() - started, 2)
        print(f"{name:<24} {'ok' if results[name]['ok'] else 'FAILED'}  {results[name]}"[:400])
        return fn

    return wrap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/results/gpu_check.json")
    parser.add_argument("--dry-run-on-cpu", action="store_true", help="check the script itself without a GPU")
    args = parser.parse_args()
    assert torch.cuda.is_available() or args.dry_run_on_cpu, "no CUDA device"
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (dry run)"
    results: dict = {"device": name, "torch": torch.__version__}

    from search_spaces.builder import build_model
    from search_spaces.nasfpn import NasFpnSpace, SearchSpaceConfig
    from search_spaces.ops import list_ops
    from trainers.loop import evaluate, pick_device, train_epoch

    space = NasFpnSpace(
        SearchSpaceConfig(backbones=("resnet18",), num_cells=(5,), channels=(64,), ops=tuple(list_ops()))
    )
    device = pick_device()

    @section(results, "forward_bf16_vs_fp32")
    def _():
        rng = np.random.default_rng(0)
        diffs = []
        for _ in range(6):
            arch = space.sample(rng)
            model = build_model(arch, 4, 3).eval()
            x = torch.randn(2, 4, 128, 128)
            with torch.inference_mode():
                ref = model(x)
                gpu = device.prepare(model)
                with device.autocast():
                    out = gpu(device.batch(x)).float().cpu()
            diffs.append(float((out - ref).abs().max() / ref.abs().max()))
        assert max(diffs) < 0.1, diffs
        return {"max_rel_diff": max(diffs), "channels_last": True}

    @section(results, "train_loop_cuda")
    def _():
        torch.manual_seed(0)
        arch = space.sample(np.random.default_rng(1))
        model = device.prepare(build_model(arch, 4, 2))
        x = torch.randn(64, 4, 64, 64)
        y = (x[:, 3] > 0.3).long()  # learnable: band 4 thresholded
        batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = [train_epoch(model, batches, opt, device)["loss"] for _ in range(8)]
        miou = evaluate(model, batches, 2, device).miou()
        assert losses[-1] < losses[0], losses
        return {"loss_first": losses[0], "loss_last": losses[-1], "miou": miou}

    @section(results, "latency_cuda_vs_cpu")
    def _():
        from search_spaces.latency.harness import measure_latency

        arch = space.sample(np.random.default_rng(2))
        model = build_model(arch, 4, 2)
        gpu = measure_latency(model, (1, 4, 256, 256), "cuda" if torch.cuda.is_available() else "cpu-1threads")
        cpu = measure_latency(model, (1, 4, 256, 256), "cpu-1threads", max_seconds=20)
        return {"cuda_ms": gpu.median_ms, "cuda_profile": gpu.profile, "cuda_cv": gpu.cv, "cpu_ms": cpu.median_ms}

    @section(results, "onnx_export_after_cuda")
    def _():
        from trainers.export import export_onnx

        arch = space.sample(np.random.default_rng(3))
        model = device.prepare(build_model(arch, 4, 2)).eval()
        report = export_onnx(model, (1, 4, 128, 128), Path("/tmp/gpu_check.onnx"))
        return {"max_abs_diff": report.max_abs_diff, "passed": report.passed}

    @section(results, "csf_step_amp")
    def _():
        from csf.encoder import CSFEncoder
        from csf.train import CSFStep, PretrainConfig

        cfg = PretrainConfig.from_dict(
            {
                "data": {"kind": "none"},
                "backbone": "resnet18",
                "crop": 64,
                "batch_size": 8,
                "warmup_steps": 1,
                "steps": 3,
            }
        )
        encoder = CSFEncoder("resnet18", 12, cfg.stages).to(device.torch_device).to(memory_format=torch.channels_last)
        step = CSFStep(encoder, cfg, device.torch_device)
        images = torch.randn(8, 12, 80, 80)
        out = [step(images, i, torch.Generator().manual_seed(i)) for i in range(3)]
        assert all(np.isfinite(o["loss"]) for o in out)
        return {"losses": [o["loss"] for o in out]}

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(stamp(results), indent=2))


if __name__ == "__main__":
    main()
