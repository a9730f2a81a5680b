"""The store's two engines: the main one (sessions, writes) and the reader of its hot single-statement reads."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

__all__ = ["make_engine", "make_reader"]


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # A pool as deep as the API's thread pool (anyio's 40): with the default 5 (+10 overflow), a
        # burst of concurrent reads opened and closed overflow connections, each paying the pragmas.
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=32, max_overflow=32
        )

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record) -> None:  # WAL: the API reads while the driver writes
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_reader(url: str, engine: Engine) -> Engine:
    """The engine of the API's hot single-statement reads (a trial page, an owner, a table version).

    Autocommit: one statement needs no transaction, so no BEGIN before it and no ROLLBACK when the
    connection goes back to the pool. On PostgreSQL it is a pool of its own without a pre-ping, so a
    read is one round trip instead of four; a connection the server dropped (a restart) is retried
    once by ``Store._read``, which is safe because these reads change nothing. Under load every
    round trip waits for a PostgreSQL backend to be scheduled on the same cores as the API.
    SQLite has no round trips (and opens no transaction for a read): its reads use the main engine.
    """
    if url.startswith("sqlite:///"):
        return engine
    return create_engine(url, pool_pre_ping=False, pool_size=8, max_overflow=8, isolation_level="AUTOCOMMIT")
