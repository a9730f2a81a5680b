"""Answers cached on the store's write version: reused while nothing they depend on changed.

A route reads the table's write version first (:class:`VersionClock`), then looks its key up: an
entry made at that version is the answer as of at least that version. Any committed write of the
table (by this API, a driver, or another replica) moves the version, so old entries are simply never
hit again and age out. Building an answer again is a query, rows and JSON.

The clock re-reads the version at most every ``max_age_s`` (``GEONAS_CACHE_MAX_AGE_S``, default
0.1 s): an answer may miss another process's write of the last tenth of a second, and a busy
leaderboard costs no database round trip at all. Writes made through this process show at once
(the store's commits reset the clock); 0 reads the version on every request, as strict as it gets.

The routes that use these run on the event loop and build a missing answer inline, not in the
thread pool. Measured with ``bench/api_load.py`` (2 cores, 50 clients, 2 workers): in the thread pool
a miss waited for the GIL while the loop served hits, and trial pages' p99 was 350 ms (SQLite, one
worker; 130 ms inline) and 341 ms (PostgreSQL; 147 ms inline).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["VersionedCache", "VersionClock", "OwnerMemo"]


class VersionedCache:
    """An LRU map of ``key -> (version, body bytes)``, bounded in entries and in bytes."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 64 * 2**20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def lookup(self, key: Hashable, version: int | None) -> bytes | None:
        """The body cached for ``key`` at exactly ``version``, or None."""
        if version is None:
            return None
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or hit[0] != version:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return hit[1]

    def put(self, key: Hashable, version: int | None, body: bytes) -> None:
        """Remember ``body`` as the answer for ``key`` as of ``version`` (never replacing a newer one)."""
        if version is None or len(body) > self.max_bytes // 16:
            return  # no version: cannot tell when it changes; one huge page must not flush everything else
        with self._lock:
            old = self._entries.pop(key, None)
            keep = old if old is not None and old[0] > version else (version, body)
            if old is not None:
                self._bytes -= len(old[1])
            self._entries[key] = keep
            self._bytes += len(keep[1])
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= len(dropped)

    def get_or_build(self, key: Hashable, version: int | None, build: Callable[[], bytes]) -> bytes:
        """The cached body, or ``build()``'s (then cached). Two builders of one key both build; either
        result is right for the version both read."""
        body = self.lookup(key, version)
        if body is None:
            body = build()
            self.put(key, version, body)
        return body


class VersionClock:
    """Tables' write versions, read through ``read(table)`` at most every ``max_age_s`` seconds."""

    def __init__(self, read: Callable[[str], int | None], max_age_s: float) -> None:
        self._read, self.max_age_s = read, max_age_s
        self._memo: dict[str, tuple[float, int | None]] = {}

    def current(self, table: str) -> int | None:
        """The version as of at most ``max_age_s`` ago (a database read when the memo is older)."""
        now = time.monotonic()
        hit = self._memo.get(table)
        if hit is not None and now - hit[0] < self.max_age_s:
            return hit[1]
        version = self._read(table)
        self._memo[table] = (now, version)  # stamped before the read: the age bound holds
        return version

    def reset(self) -> None:
        """Forget every memo (this process wrote: its own writes must show at once)."""
        self._memo.clear()


class OwnerMemo:
    """Experiment id -> owner, LRU-bounded. Owners never change, so a remembered one is never wrong;
    an experiment is deleted only when its job could not be submitted, and ``ScopedStore`` forgets it
    here when it deletes it."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def owner(self, experiment_id: str, read: Callable[[str], str | None]) -> str | None:
        """The owner of ``experiment_id``; ``read`` (which raises NotFound) answers what is not known."""
        with self._lock:
            if experiment_id in self._entries:
                self._entries.move_to_end(experiment_id)
                return self._entries[experiment_id]
        owner = read(experiment_id)
        with self._lock:
            self._entries[experiment_id] = owner
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return owner

    def forget(self, experiment_id: str) -> None:
        with self._lock:
            self._entries.pop(experiment_id, None)
