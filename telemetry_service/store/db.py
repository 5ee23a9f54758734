"""Engine set-up: any SQLAlchemy URL; SQLite gets WAL, a busy timeout and foreign keys, and is checked at start."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from telemetry_service.store.migrate import MigrationError, upgrade_to_head
from telemetry_service.text import load_json


class LedgerError(RuntimeError):
    """The ledger cannot be used as it is: say why, never start over with an empty one."""


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LedgerError(f"not a database URL: {url!r} ({exc})") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            # SQLite would take an empty file for a new database; the daemon never leaves one (it writes the
            # header as it opens), so an empty ledger was emptied by something else and must not be started over.
            if path.is_file() and path.stat().st_size == 0:
                raise LedgerError(f"the ledger {path} is an empty file (0 bytes): restore it from a backup, or "
                                  "delete it to start a new ledger")
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 10},
                               json_deserializer=load_json)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True, json_deserializer=load_json)


def open_ledger(url: str) -> tuple[Engine, sessionmaker[Session]]:
    """Connects, checks an existing SQLite file is sound, and migrates the schema to this version (creating it
    in an empty database)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                result = conn.execute(text("PRAGMA quick_check")).scalar()
                if result != "ok":
                    raise LedgerError(f"the ledger {engine.url.database} is damaged ({result}); "
                                      "restore it from a backup or point --db elsewhere")
        upgrade_to_head(engine)
    except MigrationError as exc:
        engine.dispose()
        raise LedgerError(f"cannot use the ledger {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    except LedgerError:
        engine.dispose()
        raise
    except (DatabaseError, OperationalError) as exc:
        engine.dispose()
        raise LedgerError(f"cannot open the ledger {engine.url.render_as_string(hide_password=True)}: "
                          f"{exc.orig}") from exc
    return engine, sessionmaker(engine, expire_on_commit=False)
