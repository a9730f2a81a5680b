"""``geonas db`` and ``geonas token``: the few commands that work on the database, not through the API.

They need the database URL (settings) and run where an operator runs them (the API's host or a job
with its environment); everything a user does goes through the REST API instead.
"""

from __future__ import annotations

from sqlalchemy import create_engine, pool

from .settings import get_settings

__all__ = ["upgrade", "new_token", "tokens", "revoke"]


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


def _store():
    from .store import get_store

    return get_store(get_settings().resolved_database_url)


def new_token(name: str, admin: bool = False) -> str:
    from search_spaces.errors import GeonasError

    from .auth import create_token

    try:
        return create_token(_store(), name, admin)
    except ValueError as exc:
        raise GeonasError(str(exc)) from None


def tokens() -> list[str]:
    return [
        f"{t.id}  {t.name}  {'admin' if t.admin else 'user'}  created {t.created_at:%Y-%m-%d %H:%M}"
        + (f"  revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "")
        for t in _store().list_tokens()
    ]


def revoke(token_id: str) -> None:
    _store().revoke_token(token_id)
