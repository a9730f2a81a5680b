"""Answers cached on the store's write version: reused while nothing they depend on changed, never stale.

A route reads :meth:`Store.write_version` first, then looks its key up: an entry made at that version
is the answer as of at least that version. Any committed write of the table (by this API, a driver,
or another replica) moves the version, so old entries are simply never hit again and age out. The
version read is one primary-key lookup; building the answer again is a query, ORM rows and JSON.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["VersionedCache"]


class VersionedCache:
    """An LRU map of ``key -> (version, body bytes)``, bounded in entries and in bytes."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 64 * 2**20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[Hashable, tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_build(self, key: Hashable, version: int | None, build: Callable[[], bytes]) -> bytes:
        """The body cached for ``key`` at ``version``, or ``build()`` (then cached). ``version`` None:
        the store cannot say when it changes, so nothing is cached."""
        if version is None:
            return build()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit[0] == version:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit[1]
            self.misses += 1
        body = build()  # outside the lock: two builders of one key both build, one entry wins
        if len(body) > self.max_bytes // 16:
            return body  # one huge page must not flush everything else
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            if old is None or old[0] <= version:
                self._entries[key] = (version, body)
                self._bytes += len(body)
            elif old is not None:  # a newer entry was stored meanwhile: keep it
                self._entries[key] = old
                self._bytes += len(old[1])
            while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
        return body
