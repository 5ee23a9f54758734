"""Brings a ledger's schema to this version with Alembic, keeping every row.

Three cases at start: an empty database gets every revision; a versioned one gets the revisions it lacks; a
ledger written before migrations existed (the baseline tables, no alembic_version) is stamped as the
baseline and then upgraded, never re-created. On PostgreSQL several daemons may start at once against one
database: a transaction-scoped advisory lock lets one of them migrate while the others wait, then find
nothing left to do.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection

ALEMBIC_INI = Path(__file__).resolve().with_name("alembic.ini")
BASELINE = "0001"
# The tables the baseline revision creates: a ledger holding all of them and no alembic_version predates migrations.
BASELINE_TABLES = frozenset({"nodes", "devices", "runs", "run_members", "phases", "samples", "process_samples",
                             "sampler_sessions"})
_PG_LOCK_KEY = zlib.crc32(b"joulemeter ledger migration")


class MigrationError(RuntimeError):
    """The schema cannot be brought to this version; the message says why and what to do."""


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config(str(ALEMBIC_INI))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder holds no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine) -> str:
    """Migrates the ledger behind `engine` to the newest revision; returns that revision."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # SQLite rebuilds a table to alter it; foreign keys are off meanwhile and checked afterwards
            # (the pragma has no effect inside a transaction, so it is set before one starts).
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                if sqlite:  # the driver would begin only before DML; the whole migration is one transaction
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                _stamp_if_unversioned(conn)
                command.upgrade(alembic_config(conn), "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise MigrationError(f"the migration left {len(broken)} rows with dangling references, "
                                             f"first {broken[0]}; nothing was changed")
                revision = current_revision(conn)
        except CommandError as exc:
            raise MigrationError(_explain(exc)) from exc
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
    assert revision is not None
    return revision


def _stamp_if_unversioned(conn: Connection) -> None:
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables or not tables & BASELINE_TABLES:
        return
    missing = BASELINE_TABLES - tables
    if missing:
        raise MigrationError(f"the database holds some ledger tables ({', '.join(sorted(tables & BASELINE_TABLES))}) "
                             f"but not {', '.join(sorted(missing))}, and no schema version: it is not a ledger this "
                             "daemon wrote; point --db at another database")
    command.stamp(alembic_config(conn), BASELINE)


def _explain(exc: CommandError) -> str:
    text_ = str(exc)
    if "Can't locate revision" in text_:
        return (f"the ledger's schema is newer than this daemon knows ({text_}); "
                "upgrade joulemeter on this node, or point --db at another database")
    return f"schema migration failed: {text_}"
