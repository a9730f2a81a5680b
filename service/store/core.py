"""The store's base: engines, sessions and transactions, the hooks every commit runs, and the two ways in
that each aggregate's methods share: a transition-checked update and a retried single-statement read."""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from search_spaces.errors import NotFound

from ..states import check_transition
from .engine import make_engine, make_reader
from .schema import migrate
from .versions import VERSION_QUERY, bump_versions

__all__ = ["StoreCore", "fetch_all", "fetch_first", "fetch_scalar"]


def fetch_all(result) -> list[Any]:
    # one fetchall from the driver; iterating the result fetched row by row (about a sixth of a
    # 100-row page's read time on PostgreSQL, profiled)
    return result.all()


def fetch_first(result):
    return result.first()


def fetch_scalar(result):
    return result.scalar()


class StoreCore:
    """Connections, transactions and write notifications; the aggregates' methods are built on these."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self.reader = make_reader(url, self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "after_flush", bump_versions)
        self._write_callbacks: list[Callable[[], Callable[[], None] | None]] = []  # see on_write
        event.listen(self._sessions, "after_flush", self._flushed)
        event.listen(self._sessions, "after_commit", self._committed)

    def on_write(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each committed transaction of this store that wrote something.

        A bound method is held weakly: an app that registered its clock and was dropped (the store
        is cached per URL and outlives it) is forgotten, not called for ever.
        """
        ref = weakref.WeakMethod(callback) if isinstance(callback, types.MethodType) else (lambda: callback)
        self._write_callbacks.append(ref)

    def _flushed(self, session: Session, _context) -> None:
        session.info["geonas_wrote"] = True

    def _committed(self, session: Session) -> None:
        if not session.info.pop("geonas_wrote", False):
            return
        alive = []
        for ref in self._write_callbacks:
            callback = ref()
            if callback is not None:
                alive.append(ref)
                callback()
        self._write_callbacks = alive

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def _update(self, table: type, kind: str, ident: str, state: str | None, fields: dict[str, Any]):
        """Set ``fields`` and move ``state`` through the one transition check; a missing row is NotFound."""
        with self.session() as s:
            row = s.get(table, ident)
            if row is None:
                raise NotFound(f"{kind} {ident} does not exist")
            if state is not None:
                check_transition(kind, ident, row.state, state)
                row.state = state
            for key, value in fields.items():
                setattr(row, key, value)
            return row

    def write_version(self, table: str = "trials") -> int | None:
        """The table's write counter (see :class:`~.schema.StoreVersion`); read it *before* what it keys.

        None when the database has no counter for the table (nothing would move it): do not cache.
        """
        value = self._read(VERSION_QUERY, {"name": table}, fetch_scalar)
        return None if value is None else int(value)

    def _read(self, statement, params: dict[str, Any], take: Callable[[Any], Any]) -> Any:
        """``take(result)`` of one read-only statement on the reader engine (see :func:`.engine.make_reader`),
        run again once on a fresh connection if the server had dropped the pooled one."""
        for attempt in (1, 2):
            try:
                with self.reader.connect() as conn:
                    return take(conn.execute(statement, params))
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
