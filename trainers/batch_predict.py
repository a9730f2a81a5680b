"""Batch prediction on a Ray cluster with Ray Data: scene windows in, class probabilities out.

The pipeline has three parts, and only the middle one knows the model:

1. **read** (Ray Data tasks): each window of every scene is read with rasterio and normalised by
   :func:`trainers.blend.read_window`; a window that cannot be read carries its error instead;
2. **predict** (a pool of :class:`WindowPredictor` actors, ``map_batches``): each actor builds the
   registered model once, then turns batches of windows into probabilities (a GPU with mixed
   precision where the cluster has GPUs, a CPU otherwise), the same forward pass as the in-process
   path (:func:`trainers.predict.window_probabilities`);
3. **blend and write** (this driver): results come back in order and are blended per scene by
   :class:`trainers.blend.StripBlender` into a :class:`trainers.scene_output.SceneWriter`, exactly as
   ``predict_scene`` does, so both paths write the same pixels.

A scene whose window cannot be read fails alone, with the reason; the others go on.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .blend import StripBlender, read_window
from .scene_output import SceneWriter
from .scenes import ScenePlan

__all__ = ["ModelRecord", "ClusterOptions", "read_windows", "WindowPredictor", "predict_on_cluster"]

#: CPUs a read task asks for: reading is light next to the model, and must still find room beside
#: actors that hold the cluster's whole CPUs.
READ_CPUS = 0.25


@dataclass(frozen=True)
class ModelRecord:
    """What the actors need to rebuild a registered model, and what its inputs must look like."""

    model_id: str
    descriptor: dict[str, Any]
    bands: list[str]
    classes: list[str]
    mean: list[float]
    std: list[float]
    weights: bytes  # the safetensors file itself: no shared storage needed between nodes


@dataclass(frozen=True)
class ClusterOptions:
    batch_size: int = 8
    workers: int | None = None  # model actors; None: one per GPU, else as many as the CPUs allow
    cpus_per_worker: float = 1.0
    device: str = "auto"  # auto | cpu | cuda
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per actor


def read_windows(
    batch: dict[str, np.ndarray],
    *,
    scenes: dict[int, tuple[str, list[int], int]],
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """Read a batch of windows (``scene``, ``y``, ``x``) as normalised images and valid masks."""
    import rasterio

    mean_a = np.asarray(mean, np.float32)[:, None, None]
    std_a = np.asarray(std, np.float32)[:, None, None]
    images, present, errors = [], [], []
    handles: dict[int, Any] = {}
    try:
        for s, y, x in zip(batch["scene"], batch["y"], batch["x"], strict=True):
            path, bands, tile = scenes[int(s)]
            try:
                if int(s) not in handles:
                    handles[int(s)] = rasterio.open(path)
                image, valid = read_window(handles[int(s)], bands, int(y), int(x), tile, mean_a, std_a)
                error = ""
            except Exception as exc:  # noqa: BLE001 - GDAL raises several families; any of them fails this scene alone
                image = np.zeros((len(bands), tile, tile), np.float32)
                cause = f" ({exc.__cause__})" if exc.__cause__ else ""
                valid = np.zeros((tile, tile), bool)
                error = f"cannot read scene {path} at window ({y}, {x}): {exc}{cause}"
            images.append(image)
            present.append(valid)
            errors.append(error)
    finally:
        for handle in handles.values():
            handle.close()
    return {
        "scene": batch["scene"],
        "y": batch["y"],
        "x": batch["x"],
        "image": _column(images),
        "present": _column(present),
        "error": np.asarray(errors, dtype=object),
    }


def _column(arrays: list[np.ndarray]) -> np.ndarray:
    """One tensor column: stacked when all shapes agree, else ragged (scenes smaller than a tile)."""
    if len({a.shape for a in arrays}) <= 1:
        return np.stack(arrays)
    ragged = np.empty(len(arrays), dtype=object)
    ragged[:] = arrays
    return ragged


class WindowPredictor:
    """A model actor: builds the registered model once, then maps batches of windows to probabilities."""

    def __init__(self, record: ModelRecord, threads: int | None = None) -> None:
        import ray
        import torch

        from search_spaces.builder import model_from_descriptor

        from .export import load_weights
        from .loop import pick_device

        if threads:
            torch.set_num_threads(threads)
        model = model_from_descriptor(record.descriptor, len(record.bands), len(record.classes))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "weights.safetensors")
            with open(path, "wb") as handle:
                handle.write(record.weights)
            load_weights(model, path)
        self.device = pick_device()
        self.model = self.device.prepare(model).eval()
        self.num_classes = len(record.classes)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from .predict import window_probabilities

        images, errors = batch["image"], batch["error"]
        probs: list[np.ndarray | None] = [None] * len(errors)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            if errors[i]:
                probs[i] = np.zeros((self.num_classes, *image.shape[1:]), np.float32)
            else:
                by_shape.setdefault(image.shape, []).append(i)
        for rows in by_shape.values():
            out = window_probabilities(self.model, self.device, np.stack([images[i] for i in rows]))
            for i, p in zip(rows, out, strict=True):
                probs[i] = p
        return {
            "scene": batch["scene"],
            "y": batch["y"],
            "x": batch["x"],
            "probs": _column(probs),  # type: ignore[arg-type]
            "present": batch["present"],
            "error": errors,
            "node": np.full(len(errors), self.node, dtype=object),
        }


def _actor_resources(options: ClusterOptions) -> tuple[int, float, float]:
    """(actors, CPUs, GPUs) per actor, from the options and what the cluster has."""
    import ray

    total = ray.cluster_resources()
    gpus = total.get("GPU", 0.0)
    use_gpu = options.device == "cuda" or (options.device == "auto" and gpus > 0)
    if use_gpu:
        workers = options.workers or max(1, int(gpus))
        return workers, options.cpus_per_worker, 1.0
    fits = [(total.get("CPU", 1.0) - READ_CPUS) / options.cpus_per_worker]
    fits += [total.get(name, 0.0) / need for name, need in options.resources.items() if need > 0]
    return options.workers or max(1, int(min(fits))), options.cpus_per_worker, 0.0


def predict_on_cluster(
    plans: Sequence[ScenePlan],
    record: ModelRecord,
    options: ClusterOptions,
    *,
    tags: dict[str, str],
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Predict every ``pending`` plan on the cluster; plans end ``completed`` or ``failed`` (in place).

    Returns the run's figures: windows, seconds, windows/s, actors, windows per node, and when the
    first batch came back (``first_batch_s``: the pipeline's start-up, actors building the model).
    """
    import ray
    import ray.data

    todo = [p for p in plans if p.state == "pending"]
    items = [{"scene": i, "y": y, "x": x} for i, plan in enumerate(todo) for y, x in plan.grid.windows()]
    workers, cpus, gpus = _actor_resources(options)
    stats: dict[str, Any] = {"windows": 0, "seconds": 0.0, "actors": workers, "gpus_per_actor": gpus, "nodes": {}}
    if not items:
        return stats
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # the blender needs row order
    scenes = {i: (str(p.path), list(p.bands or []), p.grid.tile) for i, p in enumerate(todo)}
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / options.batch_size)))
    ds = ds.map_batches(
        read_windows,
        batch_size=options.batch_size,
        fn_kwargs={"scenes": scenes, "mean": record.mean, "std": record.std},
        num_cpus=READ_CPUS,
    )
    ds = ds.map_batches(
        WindowPredictor,
        batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus,
        num_gpus=gpus,
        fn_constructor_kwargs={"record": record, "threads": max(1, int(cpus))},
        **({"resources": dict(options.resources)} if options.resources else {}),
    )
    blenders: dict[int, tuple[StripBlender, SceneWriter]] = {}
    start = time.monotonic()
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if "first_batch_s" not in stats:  # start-up (actors building the model) ends here
                stats["first_batch_s"], stats["first_batch_windows"] = time.monotonic() - start, len(batch["scene"])
            for j, s in enumerate(batch["scene"]):
                s = int(s)
                plan = todo[s]
                stats["windows"] += 1
                node = str(batch["node"][j])
                stats["nodes"][node] = stats["nodes"].get(node, 0) + 1
                if plan.state == "failed":
                    continue
                if batch["error"][j]:
                    _fail(plan, blenders.pop(s, None), str(batch["error"][j]))
                    continue
                if s not in blenders:
                    writer = SceneWriter(plan.outputs, plan.header.profile, len(record.classes), tags)
                    want = plan.outputs.probabilities is not None
                    blenders[s] = (StripBlender(plan.grid, len(record.classes), writer, probabilities=want), writer)
                    plan.state = "running"
                blender, writer = blenders[s]
                blender.add(int(batch["y"][j]), int(batch["x"][j]), batch["probs"][j], batch["present"][j])
                if blender.windows_done == len(plan.grid):
                    blender.finish()
                    writer.commit()
                    del blenders[s]
                    plan.state = "completed"
            stats["seconds"] = time.monotonic() - start
            if progress:
                progress(dict(stats))
    finally:
        for s, (_, writer) in blenders.items():  # stopped part-way: nothing half-written stays
            writer.abort()
            if todo[s].state == "running":
                todo[s].state = "pending"
    stats["seconds"] = time.monotonic() - start
    stats["windows_per_s"] = stats["windows"] / max(stats["seconds"], 1e-9)
    return stats


def _fail(plan: ScenePlan, open_writer: tuple[StripBlender, SceneWriter] | None, reason: str) -> None:
    if open_writer is not None:
        open_writer[1].abort()
    plan.state, plan.error = "failed", reason
