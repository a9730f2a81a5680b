"""``geonas db`` and ``geonas token``: the few commands that work on the database, not through the API.

They need the database URL (settings) and run where an operator runs them (the API's host or a job
with its environment); everything a user does goes through the REST API instead.
"""

from __future__ import annotations

from sqlalchemy import create_engine, pool

from .settings import get_settings

__all__ = ["upgrade"]


def upgrade(revision: str = "head") -> str:
    """Upgrade the configured database to ``revision``; returns a line saying from where to where."""
    from . import migrations
    from .store import _make_engine, migrate

    url = get_settings().resolved_database_url
    engine = _make_engine(url) if url.startswith("sqlite") else create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        before = migrations.current(conn)
    if revision == "head":
        migrate(engine)
    else:
        with engine.begin() as conn:
            migrations.upgrade(conn, revision)
    with engine.connect() as conn:
        after = migrations.current(conn)
    engine.dispose()
    return f"database {engine.url.render_as_string(hide_password=True)}: {before or 'empty'} -> {after}"
