"""Write versions: which tables carry a :class:`~.schema.StoreVersion` counter, the flush hook that moves
it and the statement that reads it (``Store.write_version``, in :mod:`.core`, runs it)."""

from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from .schema import StoreVersion, Trial

__all__ = ["VERSIONED", "VERSION_QUERY", "bump_versions"]

#: Tables whose writes move their :class:`StoreVersion` row.
VERSIONED = {Trial: "trials"}

#: Built once: read on every cached API answer, where building the statement cost more than running it.
VERSION_QUERY = select(StoreVersion.version).where(StoreVersion.name == bindparam("name"))


def bump_versions(session: Session, _flush_context) -> None:
    """``after_flush``: increment the version of every versioned table this flush wrote to.

    After the flush, so a transaction takes the counter's row lock after its rows' locks, never
    before: one that holds the counter is never waiting for a row another writer holds (PostgreSQL).
    """
    changed = {
        VERSIONED[type(obj)] for obj in (*session.new, *session.dirty, *session.deleted) if type(obj) in VERSIONED
    }
    table = StoreVersion.__table__
    for name in sorted(changed):  # one order for all writers
        session.connection().execute(update(table).where(table.c.name == name).values(version=table.c.version + 1))
