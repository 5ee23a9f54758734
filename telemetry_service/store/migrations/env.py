"""Alembic environment for the ledger.

The daemon hands its own connection in (`config.attributes["connection"]`, see store/migrate.py), so a
migration runs under the same engine set-up and locks as the daemon. From the `alembic` command line the URL
comes from `-x db=URL`, else TELEMETRY_DB, else the daemon's default ledger.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from telemetry_service.config import default_db_url
from telemetry_service.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("db") or os.environ.get("TELEMETRY_DB") or default_db_url()


def _configure(connection: Connection) -> None:
    # SQLite alters a table by rebuilding it: batch mode writes migrations that way.
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)


def run_offline() -> None:
    url = _url()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from telemetry_service.store.db import make_engine

    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
