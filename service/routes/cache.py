"""Answers cached on the store's write version: reused while nothing they depend on changed.

A route reads the table's write version first (:class:`VersionClock`), then looks its key up: an
entry made at that version is the answer as of at least that version. Any committed write of the
table (by this API, a driver, or another replica) moves the version, so old entries are simply never
hit again and age out. Building an answer again is a query, rows and JSON.

The clock re-reads the version at most every ``max_age_s`` (``GEONAS_CACHE_MAX_AGE_S``, default
0.1 s): an answer may miss another process's write of the last tenth of a second, and a busy
leaderboard costs no database round trip at all. Writes made through this process show at once
(the store's commits reset the clock); 0 reads the version on every request, as strict as it gets.

Under the in-process cache, :class:`SharedResponses` (a SQLite file in the home folder;
``GEONAS_SHARED_RESPONSE_CACHE``) lets uvicorn's worker processes use each other's builds: with two
workers and 1,000 distinct trial pages, ``bench/api_load.py`` builds each page once instead of twice,
and the cold start that decided the p99 is half as long.

The routes that use these run on the event loop and build a missing answer inline, not in the
thread pool. Measured with ``bench/api_load.py`` (2 cores, 50 clients, 2 workers): in the thread pool
a miss waited for the GIL while the loop served hits, and trial pages' p99 was 350 ms (SQLite, one
worker; 130 ms inline) and 341 ms (PostgreSQL; 147 ms inline).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

__all__ = ["VersionedCache", "SharedResponses", "VersionClock", "OwnerMemo"]


class SharedResponses:
    """A second level under :class:`VersionedCache`, shared by the API's worker processes on one host.

    A SQLite file of ``(key, version, body)``: a page one worker built is a hit for the others, so
    with ``n`` workers each distinct answer is built once instead of ``n`` times. It is only a cache:
    no fsync, emptied when a process opens it (versions count the writes of *one* database, so entries
    from another run must not be served), and bounded in bytes (the oldest entries go first).
    A lookup is one indexed read of an in-process database (tens of microseconds).
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._db = sqlite3.connect(path, timeout=5, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, version INTEGER, body BLOB, size INTEGER)"
        )
        self._db.execute("DELETE FROM responses")
        self._lock = threading.Lock()
        self._since_trim = 0
        self.hits = self.misses = 0

    def lookup(self, key: str, version: int) -> bytes | None:
        with self._lock:
            query = "SELECT body FROM responses WHERE key = ? AND version = ?"
            row = self._db.execute(query, (key, version)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0]

    def put(self, key: str, version: int, body: bytes) -> None:
        """Store ``body`` for ``key`` at ``version``, unless a newer version is there already."""
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO responses (key, version, body, size) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO "
                    "UPDATE SET version = excluded.version, body = excluded.body, size = excluded.size "
                    "WHERE excluded.version >= responses.version",
                    (key, version, body, len(body)),
                )
                self._since_trim += len(body)
                if self._since_trim > self.max_bytes // 8:  # every worker writes: look at the table's sum
                    self._trim()
        except sqlite3.OperationalError:  # busy past the timeout: skip it, the answer is served anyway
            pass

    def _trim(self) -> None:
        """Delete the oldest entries until the table holds at most three quarters of ``max_bytes``."""
        self._since_trim = 0
        total = self._db.execute("SELECT coalesce(sum(size), 0) FROM responses").fetchone()[0]
        if total > self.max_bytes:
            self._db.execute(
                "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM (SELECT rowid, size, "
                "sum(size) OVER (ORDER BY rowid) AS upto FROM responses) WHERE upto - size < ?)",
                (total - self.max_bytes * 3 // 4,),
            )


class VersionedCache:
    """An LRU map of ``key -> (version, body bytes)``, bounded in entries and in bytes."""

    def __init__(
        self, max_entries: int = 4096, max_bytes: int = 64 * 2**20, shared: SharedResponses | None = None
    ) -> None:
        self.max_entries, self.max_bytes, self.shared = max_entries, max_bytes, shared
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

    def find(self, key: Hashable, version: int | None) -> bytes | None:
        """The cached body: this process's, else the ``shared`` level's (another worker built it; it is
        then kept here too), else None."""
        body = self.lookup(key, version)
        if body is None and self.shared is not None and version is not None:
            body = self.shared.lookup(repr(key), version)
            if body is not None:
                self.put(key, version, body)
        return body

    def get_or_build(self, key: Hashable, version: int | None, build: Callable[[], bytes]) -> bytes:
        """The cached body (:meth:`find`), else ``build()``'s, then cached in both levels. Two builders
        of one key both build; either result is right for the version both read."""
        body = self.find(key, version)
        if body is None:
            body = build()
            if self.shared is not None and version is not None:
                self.shared.put(repr(key), version, body)
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
