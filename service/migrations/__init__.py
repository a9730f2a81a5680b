"""Alembic migrations of the store, shipped inside the package so an installed geonas can upgrade a DB.

``upgrade(connection)`` is what :class:`service.store.Store` calls on start and what ``geonas db
upgrade`` runs; there is no ``alembic.ini``: the configuration is built here so the migrations work
from a wheel, an editable install or a container alike.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

__all__ = ["alembic_config", "head", "current", "upgrade"]

HERE = Path(__file__).resolve().parent


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """A Config pointing at this folder; ``connection`` (if given) is reused by env.py."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision; read once (parsing the scripts is the slow part of Alembic)."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade the database behind ``connection`` to ``revision`` (a no-op when it is there)."""
    from alembic import command

    command.upgrade(alembic_config(connection=connection), revision)
