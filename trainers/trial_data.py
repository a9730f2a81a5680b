"""The chips a trial trains on, decoded once per node and shared by every trial there.

The driver hands each trial a :class:`SplitRef` (where the split is, which bands, which seeded
subset) instead of the decoded chips. On a Ray worker, :func:`load_split` asks its node's
:class:`NodeChipCache` actor, which reads the split once and keeps it in the node's object store:
every trial on that node maps the same arrays (no copy per trial, no chip array through the driver).
Outside Ray (unit tests, a laptop), the split is read in-process and kept in a small cache.

A chip that cannot be read fails the trial that read it, with a :class:`ChipError` naming the file,
and is written to the experiment's :class:`Quarantine`; every later load (other trials, and the
failed trial's retry) leaves quarantined chips out, so one corrupt GeoTIFF costs one trial, not the
experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from search_spaces.errors import DataError

from .datasets import ChipError, SegmentationDataset

__all__ = ["SplitRef", "Quarantine", "load_split", "clear_cache"]


@dataclass(frozen=True)
class SplitRef:
    """What identifies a trial's split: dataset root, split name, bands, seeded subset."""

    root: str
    split: str
    bands: tuple[str, ...] | None = None
    subset: int | None = None
    seed: int = 0


class Quarantine:
    """Chips found unreadable during an experiment: one small JSON file per chip in ``folder``.

    One file per chip makes concurrent writers (trials on several nodes sharing the experiment's
    storage) safe without locks: writing the same chip twice writes the same content.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def add(self, error: ChipError) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(f"{error.split}/{error.chip_id}".encode()).hexdigest()[:16]
        record = {"split": error.split, "chip_id": error.chip_id, "path": str(error.path), "reason": str(error)}
        tmp = self.folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.folder / f"{name}.json")

    def records(self) -> list[dict[str, str]]:
        if not self.folder.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.folder.glob("*.json"))]

    def chip_ids(self, split: str) -> frozenset[str]:
        return frozenset(r["chip_id"] for r in self.records() if r["split"] == split)


_CACHE: OrderedDict[tuple[SplitRef, frozenset[str]], SegmentationDataset] = OrderedDict()
_CACHE_SIZE = 4  # a trial's train and val splits, and those of one more experiment
_LOCK = threading.Lock()


def load_split(ref: SplitRef, quarantine: Quarantine | None = None) -> SegmentationDataset:
    """The split, preloaded, without quarantined chips: from this node's cache on a Ray worker.

    An unreadable chip is quarantined and re-raised as a :class:`ChipError` (a :class:`DataError`
    naming the file), so the calling trial fails with that message.
    """
    excluded = quarantine.chip_ids(ref.split) if quarantine is not None else frozenset()
    try:
        return _from_node_cache(ref, excluded) if _on_ray_worker() else _load_here(ref, excluded)
    except ChipError as exc:
        if quarantine is not None:
            quarantine.add(exc)
        raise


def _read_split(ref: SplitRef, excluded: frozenset[str]) -> SegmentationDataset:
    """Decode the split now; a split left without any readable chip is an error, not an empty epoch."""
    dataset = SegmentationDataset(
        ref.root,
        ref.split,
        bands=list(ref.bands) if ref.bands else None,
        subset=ref.subset,
        seed=ref.seed,
        exclude=excluded,
    )
    if not len(dataset):
        raise DataError(f"split '{ref.split}' of {ref.root} has no readable chips left")
    return dataset


def _load_here(ref: SplitRef, excluded: frozenset[str]) -> SegmentationDataset:
    """The split from this process's small cache (outside Ray: unit tests, a laptop)."""
    key = (ref, excluded)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _read_split(ref, excluded)
            while len(_CACHE) > _CACHE_SIZE:  # a long-lived process never hoards old experiments' chips
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return _CACHE[key]


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------------- one copy per node


def _on_ray_worker() -> bool:
    # a Ray worker has imported ray already; importing it here would fix Ray's config (auth mode)
    # from the environment too early for a process that connects to a cluster later
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def _node_cache_class():
    import ray

    @ray.remote(num_cpus=0)
    class NodeChipCache:
        """Reads splits for the trials of one node and keeps them in the node's object store."""

        def __init__(self) -> None:
            self.refs: OrderedDict[tuple[SplitRef, frozenset[str]], ray.ObjectRef] = OrderedDict()

        def get(self, ref: SplitRef, excluded: frozenset[str]) -> list:
            key = (ref, excluded)
            if key not in self.refs:
                # a ChipError goes back to the asking trial, which quarantines the chip
                self.refs[key] = ray.put(_read_split(ref, excluded))
                while len(self.refs) > _CACHE_SIZE:
                    self.refs.popitem(last=False)
            self.refs.move_to_end(key)
            return [self.refs[key]]  # in a list, so Ray hands back the reference, not the arrays

    return NodeChipCache


_NODE_CACHE_CLASS = None


def _from_node_cache(ref: SplitRef, excluded: frozenset[str]) -> SegmentationDataset:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    global _NODE_CACHE_CLASS
    if _NODE_CACHE_CLASS is None:
        _NODE_CACHE_CLASS = _node_cache_class()
    node_id = ray.get_runtime_context().get_node_id()
    cache = _NODE_CACHE_CLASS.options(
        name=f"chip-cache/{node_id}",
        namespace="geonas",
        get_if_exists=True,
        lifetime="detached",  # outlives the trial that created it; dies with the node or the cluster
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote()
    try:
        (obj,) = ray.get(cache.get.remote(ref, excluded))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ChipError):
            raise ChipError(cause.split, cause.chip_id, cause.path, str(cause)) from None
        raise
    return ray.get(obj)
