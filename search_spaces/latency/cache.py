"""The latency cache: measurements persisted in SQLite, keyed by architecture, profile, shape and machine."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .harness import reference_shape
from .machine import machine_fingerprint
from .profiles import DeviceProfile, cpu_twin, get_profile
from .results import InputShape, LatencyResult, check_shape, utc_now

__all__ = ["LatencyKey", "LatencyCache", "cached_latency", "model_key"]


@dataclass(frozen=True)
class LatencyKey:
    """What makes two measurements the same: architecture, canonical profile name, input shape, and
    the machine (:func:`machine_fingerprint`) that measured."""

    arch_hash: str
    profile: str
    input_shape: InputShape
    machine: str = ""

    @classmethod
    def of(
        cls, arch_hash: str, profile: str | DeviceProfile, input_shape: Any, machine: str | None = None
    ) -> LatencyKey:
        """The key for a measurement made here (``machine`` defaults to this machine's fingerprint)."""
        prof = get_profile(profile)
        return cls(str(arch_hash), prof.name, check_shape(input_shape), machine or machine_fingerprint(prof))

    @property
    def shape_text(self) -> str:
        return "x".join(str(d) for d in self.input_shape)


class LatencyCache:
    """Latencies persisted in a SQLite file, shared safely by several processes on one machine.

    SQLite's own locking (WAL journal, busy timeout) makes concurrent readers and writers safe; the
    object holds only the path, so it pickles into Ray actors and tasks. Put the file on a local disk
    of the node that measures (SQLite locking is unreliable on network filesystems).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            # ``latency`` (no machine column) is what older versions wrote: never read, since a profile
            # name alone does not say which hardware measured
            db.execute(
                "CREATE TABLE IF NOT EXISTS measurements ("
                " arch_hash TEXT NOT NULL, profile TEXT NOT NULL, machine TEXT NOT NULL, input_shape TEXT NOT NULL,"
                " result TEXT NOT NULL, measured_at TEXT NOT NULL,"
                " PRIMARY KEY (arch_hash, profile, machine, input_shape))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS reference_calibration (profile TEXT NOT NULL, host TEXT NOT NULL,"
                " tile TEXT NOT NULL, reference_ms REAL NOT NULL, measured_at TEXT NOT NULL,"
                " PRIMARY KEY (profile, host, tile))"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    def get(self, key: LatencyKey) -> LatencyResult | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT result FROM measurements WHERE arch_hash=? AND profile=? AND machine=? AND input_shape=?",
                (key.arch_hash, key.profile, key.machine, key.shape_text),
            ).fetchone()
        return LatencyResult.from_dict(json.loads(row[0])) if row else None

    def put(self, key: LatencyKey, result: LatencyResult) -> None:
        if result.profile != key.profile or tuple(result.input_shape) != key.input_shape:
            raise ValueError(
                f"result for {result.profile} {list(result.input_shape)} filed under {key}: "
                "key and measurement disagree"
            )
        data = replace(result, cached=False, machine=result.machine or key.machine).to_dict()
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
                (key.arch_hash, key.profile, key.machine, key.shape_text, json.dumps(data), result.measured_at),
            )

    def reference_ms(self, profile: str | DeviceProfile, input_shape: Any, measure: Callable[[], float]) -> float:
        """This host's calibrated reference latency for ``profile`` and the tile size: stored once, shared.

        Every process measuring on this host then normalises by the same number, so their results are
        comparable. When two processes calibrate at once, the first to store wins and both use it.
        """
        shape = reference_shape(input_shape)
        row_key = (cpu_twin(get_profile(profile)).name, socket.gethostname(), f"{shape[2]}x{shape[3]}")
        query = "SELECT reference_ms FROM reference_calibration WHERE profile=? AND host=? AND tile=?"
        with self._connect() as db:
            row = db.execute(query, row_key).fetchone()
        if row:
            return float(row[0])
        value = float(measure())
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO reference_calibration VALUES (?, ?, ?, ?, ?)",
                (*row_key, value, utc_now()),
            )
            return float(db.execute(query, row_key).fetchone()[0])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, LatencyKey) and self.get(key) is not None

    def __len__(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def entries(self, profile: str | None = None) -> list[tuple[LatencyKey, LatencyResult]]:
        """Every cached measurement (of one profile, if given)."""
        query = "SELECT arch_hash, profile, machine, input_shape, result FROM measurements"
        args: tuple[str, ...] = ()
        if profile is not None:
            query, args = query + " WHERE profile=?", (get_profile(profile).name,)
        with self._connect() as db:
            rows = db.execute(query, args).fetchall()
        return [
            (
                LatencyKey(h, p, check_shape(s.split("x")), m),
                LatencyResult.from_dict(json.loads(r)),
            )
            for h, p, m, s, r in rows
        ]


def cached_latency(
    cache: LatencyCache | None, key: LatencyKey, measure_fn: Callable[[], LatencyResult]
) -> LatencyResult:
    """The cached result for ``key`` (marked ``cached=True``), else ``measure_fn()``, stored."""
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return replace(hit, cached=True)
    result = measure_fn()
    result = result if result.machine else replace(result, machine=key.machine)
    if cache is not None:
        cache.put(key, result)
    return result


def model_key(descriptor: dict[str, Any], num_classes: int) -> str:
    """The cache's architecture key: the ArchSpec hash, or a hash of a baseline descriptor.

    The number of classes is part of it (it sizes the head); bands and tile size are in the input shape.
    """
    if "arch" in descriptor:
        from search_spaces.nasfpn import ArchSpec

        base = ArchSpec.from_dict(descriptor["arch"]).hash
    elif "baseline" in descriptor:
        text = json.dumps({"baseline": descriptor["baseline"], "backbone": descriptor.get("backbone")}, sort_keys=True)
        base = "baseline-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    else:
        raise SpecError("a model descriptor needs 'arch' or 'baseline'", field="model")
    return f"{base}/{int(num_classes)}cls"
