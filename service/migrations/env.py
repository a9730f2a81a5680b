"""Alembic environment: online migrations only, on a connection handed over by the caller or a URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from service.store import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two processes starting at once (API and a driver) must not both create the tables.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7243001)")
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
