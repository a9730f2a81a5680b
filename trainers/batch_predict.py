"""Batch prediction on a Ray cluster with Ray Data: a scene is the unit of work, and the actor that
predicts a scene also writes it.

**Why scenes, not windows.** The first version streamed every window through Ray Data (read tasks,
then model actors, then the driver), and the driver blended and wrote every scene alone. Each window's
float32 class probabilities (classes × tile² × 4 bytes: more than the window's own pixels) crossed
the object store to one process that did all the blending and all the COG encoding of the cluster:
two worker nodes ran at 1.23× one node, and one node at 0.43× the in-process path
(``bench/results/predict_scale.json`` of 9c876ae). Now:

1. the driver plans the scenes and gives the actor pool one row per scene, the largest scenes first
   (the tail of a job is then a small scene), with two calls in flight per actor: the next scene
   waits at the actor, so it starts the moment the last one is written instead of after a round
   trip through the driver's executor (with one call in flight a 1-CPU actor was busy 94 % of the
   time, with two 97-100 %), and no actor hoards more than one scene that another could take at the end;
2. each actor (:class:`ScenePredictor`) builds the model once (:class:`WindowModel`), then for each
   scene reads its windows with rasterio, runs the model over them in batches of ``batch_size``,
   blends them with :class:`~trainers.blend.StripBlender` and writes the COG with
   :class:`~trainers.scene_output.SceneWriter`: the same pieces, in the same order and the same
   batches, as :func:`trainers.predict.predict_scene`, so the pixels are the in-process path's;
3. it returns a small summary (scene, windows, seconds, node, error); the driver tracks progress,
   checks that each mask an actor wrote is complete where the driver stands, then writes the VRT
   mosaic and the job's result. Actors also tell a tiny counter actor (:class:`_Tally`) how many
   windows of their scene are done (every :data:`REPORT_EVERY_S`, not every batch: each report
   wakes two processes that share the CPUs with the model), so the windows/s on the API move during
   a scene and not only at its end.

**The output folder must be shared** (``write_on="workers"``, the default): actors write under ``out``
on their own node, so ``out`` must be one folder that every node sees at the same path (NFS, a
mounted bucket, a volume shared by the pods; on one machine any folder is). A mask that an actor
wrote and the driver still cannot see a minute later fails its scene, saying so. ``write_on="driver"`` needs no shared
folder: actors still read, predict and blend, and send the scene's blended mask (uint8, one byte a
pixel, and the probabilities ×255 as uint8 when asked) to the driver, which writes it. That is less
than even float16 window probabilities would be, and unlike them it leaves the pixels equal to the
in-process path's (blending float16 probabilities would move ties and rounding). Its costs: one
scene's mask in the actor's and the driver's memory, and the COG encoding back on one process.

**A scene, not a strip of one.** A strip of a scene's windows would need its neighbour strip's
overlapping windows and a last step joining the parts into one COG. A region is many scenes, so
whole scenes keep every actor busy while there are at least as many scenes left as actors; a job of
fewer scenes than actors starts only as many actors as scenes.

STYLE §14 keeps reading and writing outside the model actors. The model part still knows nothing of
files (:class:`WindowModel`: windows in, probabilities out); :class:`ScenePredictor` puts reading and
writing beside it in the actor because moving the arrays to a reader and a writer was the cost.
A scene that cannot be read fails alone, with the reason; the others go on.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_spaces.errors import DataError

from .blend import StripBlender, read_window
from .scene_output import SceneOutputs, SceneWriter, is_complete
from .scenes import ScenePlan
from .tiling import SceneGrid

__all__ = [
    "WRITE_ON", "ModelRecord", "ClusterOptions", "SceneTask", "WindowModel", "ScenePredictor",
    "predict_on_cluster", "finish_scene", "settle_unseen", "NOT_SHARED",
]  # fmt: skip

#: Where a scene's outputs are written: by the actor that predicted it (the default; a shared output
#: folder) or by the job's driver (any folder the driver can write).
WRITE_ON = ("workers", "driver")

#: How often an actor tells the tally how far its scene is (its first batch is always told at once).
REPORT_EVERY_S = 0.5

NOT_SHARED = (
    "its mask was written on node {node}, but the job's driver does not see it at {path}: the output "
    "folder must be one folder shared by every node (NFS, a mounted bucket), or use write_on: driver"
)


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
    write_on: str = "workers"  # workers (a shared output folder) | driver
    visible_within_s: float = 60.0  # how long a mask an actor wrote may take to appear to the driver

    def __post_init__(self) -> None:
        if self.write_on not in WRITE_ON:
            raise ValueError(f"write_on must be one of {', '.join(WRITE_ON)}, not {self.write_on!r}")


@dataclass(frozen=True)
class SceneTask:
    """One scene as an actor needs it: where to read, which bands, its windows, where its outputs go."""

    path: str
    bands: list[int]
    grid: SceneGrid
    profile: dict[str, Any]  # height, width, crs, transform
    outputs: SceneOutputs

    @classmethod
    def of(cls, plan: ScenePlan) -> SceneTask:
        assert plan.grid is not None and plan.header is not None and plan.bands is not None
        return cls(str(plan.path), list(plan.bands), plan.grid, dict(plan.header.profile), plan.outputs)


class WindowModel:
    """The registered model, built once: normalised windows in, class probabilities out (no files)."""

    def __init__(self, record: ModelRecord, threads: int | None = None) -> None:
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

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from .predict import window_probabilities

        return window_probabilities(self.model, self.device, images)


class _SceneArrays:
    """A strip sink that keeps a scene's blended mask in memory (``write_on="driver"``)."""

    def __init__(self, grid: SceneGrid, num_classes: int, probabilities: bool) -> None:
        self.labels = np.empty((grid.height, grid.width), np.uint8)
        self.probs = np.empty((num_classes, grid.height, grid.width), np.uint8) if probabilities else None

    def __call__(self, y: int, labels: np.ndarray, probs: np.ndarray | None) -> None:
        self.labels[y : y + labels.shape[0]] = labels
        if self.probs is not None and probs is not None:
            self.probs[:, y : y + labels.shape[0]] = probs


class ScenePredictor:
    """A model actor whose unit of work is a scene: read, predict, blend and write (or send) it.

    ``__call__`` takes rows ``{"scene": index into tasks}`` and returns one summary row per scene:
    ``windows`` blended, ``seconds``, ``node``, ``error`` ("" when the scene was written); with
    ``write_on="driver"`` also the scene's ``labels`` (and ``probs``) for the driver to write.
    """

    def __init__(
        self,
        record: ModelRecord,
        tasks: Sequence[SceneTask],
        *,
        batch_size: int,
        tags: dict[str, str],
        write_on: str = "workers",
        tally: Any = None,
        threads: int | None = None,
    ) -> None:
        self.model = WindowModel(record, threads)
        self.tasks, self.batch_size, self.tags, self.write_on, self.tally = tasks, batch_size, tags, write_on, tally
        self.mean = np.asarray(record.mean, np.float32)[:, None, None]
        self.std = np.asarray(record.std, np.float32)[:, None, None]
        ray = sys.modules.get("ray")  # imported in an actor; never imported here for a test in this process
        context = ray.get_runtime_context() if ray is not None and ray.is_initialized() else None
        self.node = context.get_node_id() if context is not None else "local"
        self.key = (context.get_actor_id() if context is not None else None) or f"pid-{os.getpid()}"
        self.reported = 0.0  # when the tally last heard from this actor (0: never)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows = [self.scene(int(s)) for s in batch["scene"]]
        out = {key: np.asarray([r[key] for r in rows]) for key in ("scene", "windows", "seconds")}
        out |= {key: np.asarray([r[key] for r in rows], dtype=object) for key in ("node", "error")}
        if self.write_on == "driver":
            out["labels"] = _column([r["labels"] for r in rows])
            if any(r["probs"] is not None for r in rows):
                out["probs"] = _column([r["probs"] for r in rows])
        return out

    def scene(self, index: int) -> dict[str, Any]:
        """Predict one scene; its outputs are complete under their final names, or absent and the error says why."""
        task, start = self.tasks[index], time.monotonic()
        want_probs = task.outputs.probabilities is not None
        classes = self.model.num_classes
        sink: SceneWriter | _SceneArrays | None = None
        windows, error = 0, ""
        try:
            if self.write_on == "driver":
                sink = _SceneArrays(task.grid, classes, want_probs)
            else:
                sink = SceneWriter(task.outputs, task.profile, classes, self.tags)
            windows = self._predict(index, task, StripBlender(task.grid, classes, sink, probabilities=want_probs))
            if isinstance(sink, SceneWriter):
                sink.commit()
        except Exception as exc:  # noqa: BLE001 - a scene fails alone, with its reason, whatever failed
            if isinstance(sink, SceneWriter):
                sink.abort()
            error = str(exc) if isinstance(exc, DataError) else f"scene {task.path} on node {self.node}: {exc!r}"
        row: dict[str, Any] = {"scene": index, "windows": windows, "seconds": time.monotonic() - start,
                               "node": self.node, "error": error}  # fmt: skip
        if self.write_on == "driver":
            done = isinstance(sink, _SceneArrays) and not error
            row["labels"] = sink.labels if done else np.zeros((1, 1), np.uint8)  # type: ignore[union-attr]
            placeholder = np.zeros((classes, 1, 1), np.uint8) if want_probs else None
            row["probs"] = sink.probs if done else placeholder  # type: ignore[union-attr]
        return row

    def _predict(self, index: int, task: SceneTask, blender: StripBlender) -> int:
        """Blend every window of the scene, in the grid's order and in batches, as ``predict_scene`` does."""
        import rasterio

        try:
            src = rasterio.open(task.path)
        except rasterio.errors.RasterioError as exc:
            raise DataError(f"cannot read scene {task.path}: {exc}") from None
        with src:
            windows, tile = list(task.grid.windows()), task.grid.tile
            for i in range(0, len(windows), self.batch_size):
                chunk = windows[i : i + self.batch_size]
                read = [self._read(src, task, y, x, tile) for y, x in chunk]
                probs = self.model(np.stack([image for image, _ in read]))
                for (y, x), p, (_, present) in zip(chunk, probs, read, strict=True):
                    blender.add(y, x, p, present)
                self._report(index, blender.windows_done, len(chunk))
            blender.finish()
        return blender.windows_done

    def _report(self, scene: int, windows: int, batch: int) -> None:
        now = time.monotonic()
        if self.tally is not None and (not self.reported or now - self.reported >= REPORT_EVERY_S):
            self.reported = now
            self.tally.add.remote(self.key, scene, windows, batch, time.time())

    def _read(self, src, task: SceneTask, y: int, x: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return read_window(src, task.bands, y, x, tile, self.mean, self.std)
        except Exception as exc:  # noqa: BLE001 - GDAL raises several families; any of them fails this scene alone
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            raise DataError(f"cannot read scene {task.path} at window ({y}, {x}): {exc}{cause}") from None


def _column(arrays: list[np.ndarray]) -> np.ndarray:
    """One tensor column: stacked when all shapes agree, else ragged (scenes of different sizes)."""
    if len({a.shape for a in arrays}) <= 1:
        return np.stack(arrays)
    ragged = np.empty(len(arrays), dtype=object)
    ragged[:] = arrays
    return ragged


class _Tally:
    """Windows done so far per scene, as the actors report them (a tiny actor, no CPU), and when each
    actor's first batch came: ``started`` maps an actor to (wall time, windows done by then by all)."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}
        self.started: dict[str, tuple[float, int]] = {}

    def add(self, actor: str, scene: int, windows: int, batch: int, at: float) -> None:
        if actor not in self.started:  # its first batch: count what every actor had done before it
            self.started[actor] = (at, sum(self.done.values()) + batch)
        self.done[scene] = windows

    def read(self) -> tuple[dict[int, int], dict[str, tuple[float, int]]]:
        return self.done, self.started


def _actor_resources(options: ClusterOptions) -> tuple[int, float, float]:
    """(actors, CPUs, GPUs) per actor, from the options and what the cluster has."""
    import ray

    total = ray.cluster_resources()
    gpus = total.get("GPU", 0.0)
    use_gpu = options.device == "cuda" or (options.device == "auto" and gpus > 0)
    if use_gpu:
        workers = options.workers or max(1, int(gpus))
        return workers, options.cpus_per_worker, 1.0
    fits = [total.get("CPU", 1.0) / options.cpus_per_worker]  # the actors read and write too: no read tasks
    fits += [total.get(name, 0.0) / need for name, need in options.resources.items() if need > 0]
    return options.workers or max(1, int(min(fits))), options.cpus_per_worker, 0.0


def _batches(ds, every_s: float) -> Iterator[dict[str, np.ndarray] | None]:
    """The dataset's batches as they come, and None every ``every_s`` while none comes (time to report)."""
    inbox: queue.Queue = queue.Queue()

    def pump() -> None:
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                inbox.put(("batch", batch))
            inbox.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            inbox.put(("error", exc))

    threading.Thread(target=pump, name="prediction-results", daemon=True).start()
    while True:
        try:
            kind, item = inbox.get(timeout=every_s)
        except queue.Empty:
            yield None
            continue
        if kind == "end":
            return
        if kind == "error":
            raise item
        yield item


def predict_on_cluster(
    plans: Sequence[ScenePlan],
    record: ModelRecord,
    options: ClusterOptions,
    *,
    tags: dict[str, str],
    progress: Callable[[dict[str, Any]], None] | None = None,
    every_s: float = 1.0,
) -> dict[str, Any]:
    """Predict every ``pending`` plan on the cluster; plans end ``completed`` or ``failed`` (in place).

    Returns the run's figures: windows, seconds, windows/s, actors, windows per node, and when the
    first batch of windows was predicted (``first_batch_s``: the pipeline's start-up, actors building
    the model). ``windows`` counts the windows of finished scenes (failed ones too) and those done so
    far of running ones.
    """
    import ray
    import ray.data

    todo = sorted((p for p in plans if p.state == "pending"), key=lambda p: -p.windows)  # largest first
    workers, cpus, gpus = _actor_resources(options)
    workers = min(workers, max(1, len(todo)))  # an actor without a scene would only build the model
    stats: dict[str, Any] = {"windows": 0, "seconds": 0.0, "actors": workers, "gpus_per_actor": gpus,
                             "nodes": {}, "write_on": options.write_on}  # fmt: skip
    if not todo:
        return stats
    tally = ray.remote(num_cpus=0)(_Tally).remote()
    ds = ray.data.from_items([{"scene": i} for i in range(len(todo))], override_num_blocks=len(todo))
    ds = ds.map_batches(
        ScenePredictor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
        num_cpus=cpus,
        num_gpus=gpus,
        fn_constructor_kwargs={
            "record": record,
            "tasks": [SceneTask.of(p) for p in todo],
            "batch_size": options.batch_size,
            "tags": tags,
            "write_on": options.write_on,
            "tally": tally,
            "threads": max(1, int(cpus)),
        },
        **({"resources": dict(options.resources)} if options.resources else {}),
    )
    finished: set[int] = set()
    unseen: dict[int, tuple[ScenePlan, str]] = {}
    start, wall_start = time.monotonic(), time.time()
    try:
        for batch in _batches(ds, every_s):
            for j in range(len(batch["scene"]) if batch is not None else 0):
                s = int(batch["scene"][j])  # type: ignore[index]
                finished.add(s)
                node = str(batch["node"][j])  # type: ignore[index]
                if not finish_scene(todo[s], batch, j, record, tags, options.write_on):  # type: ignore[arg-type]
                    unseen[s] = (todo[s], node)
                stats["nodes"][node] = stats["nodes"].get(node, 0) + int(batch["windows"][j])  # type: ignore[index]
            settle_unseen(unseen, record.model_id)
            running, started = ray.get(tally.read.remote())
            for s in running:
                if s not in finished:
                    todo[s].state = "running"
            stats["windows"] = sum(todo[s].windows for s in finished)
            stats["windows"] += sum(n for s, n in running.items() if s not in finished)
            _note_starts(stats, started, wall_start, workers)
            stats["seconds"] = time.monotonic() - start
            if progress:
                progress(dict(stats))
        settle_unseen(unseen, record.model_id, options.visible_within_s)
    finally:
        for plan in todo:  # stopped part-way: a scene not reported is not done
            if plan.state == "running":
                plan.state = "pending"
        ray.kill(tally)
    stats["seconds"] = time.monotonic() - start
    stats["windows_per_s"] = stats["windows"] / max(stats["seconds"], 1e-9)
    return stats


def _note_starts(stats: dict[str, Any], started: dict[str, tuple[float, int]], wall_start: float, workers: int) -> None:
    """When the first actor's first batch came (``first_batch_*``), and when every actor's had
    (``all_started_*``: from then on the whole pool predicts), as seconds since the job began and the
    windows done by then."""
    if not started:
        return
    times = sorted(started.values())
    if "first_batch_s" not in stats:
        stats["first_batch_s"], stats["first_batch_windows"] = max(0.0, times[0][0] - wall_start), times[0][1]
    if len(times) >= workers and "all_started_s" not in stats:
        stats["all_started_s"], stats["all_started_windows"] = max(0.0, times[-1][0] - wall_start), times[-1][1]


def finish_scene(
    plan: ScenePlan, batch: dict[str, np.ndarray], j: int, record: ModelRecord, tags: dict[str, str], write_on: str
) -> bool:
    """Record a scene an actor finished: written here (``write_on="driver"``), seen here, or failed.

    False when an actor wrote the scene and its mask is not visible here (yet): see :func:`settle_unseen`.
    """
    error = str(batch["error"][j])
    if error:
        plan.state, plan.error = "failed", error
        return True
    assert plan.header is not None
    if write_on == "driver":
        writer = None
        try:
            writer = SceneWriter(plan.outputs, plan.header.profile, len(record.classes), tags)
            writer(0, batch["labels"][j], batch["probs"][j] if "probs" in batch else None)
            writer.commit()
        except Exception as exc:  # noqa: BLE001 - a scene that cannot be written fails alone, as one not read
            if writer is not None:
                writer.abort()
            plan.state, plan.error = "failed", f"cannot write {plan.outputs.mask}: {exc}"
            return True
    elif not is_complete(plan.outputs, plan.header.profile, record.model_id):
        plan.state = "running"  # written on a node; see settle_unseen
        return False
    plan.state, plan.error = "completed", None
    return True


def settle_unseen(unseen: dict[int, tuple[ScenePlan, str]], model_id: str, wait_s: float = 0.0) -> None:
    """Scenes an actor wrote whose mask the driver did not see yet: ``completed`` as soon as it is seen.

    A shared folder can show a new file late (an NFS client caches that a name was absent for up to a
    minute), so only after ``wait_s`` more seconds is a scene still unseen ``failed`` (:data:`NOT_SHARED`);
    with ``wait_s=0`` those stay in ``unseen``, to be looked for again.
    """
    deadline = time.monotonic() + wait_s
    while unseen:
        for s, (plan, _) in list(unseen.items()):
            assert plan.header is not None
            if is_complete(plan.outputs, plan.header.profile, model_id):
                plan.state, plan.error = "completed", None
                del unseen[s]
        if not unseen or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if wait_s > 0:
        for plan, node in unseen.values():
            plan.state, plan.error = "failed", NOT_SHARED.format(node=node, path=plan.outputs.mask)
        unseen.clear()
