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
