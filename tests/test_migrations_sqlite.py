"""Schema migrations on SQLite: the migrations equal the models, and every upgrade path keeps the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from telemetry_service.store.db import LedgerError, make_engine, open_ledger
from telemetry_service.store.migrate import BASELINE, BASELINE_TABLES, alembic_config, head_revision
from telemetry_service.report import run_energy
from telemetry_service.runs import get_run
from telemetry_service.store.models import Base
from tests.ledger_history import RUN_ID, check_energy, ledger_at, ledger_before_migrations, row_counts

REVISIONS = [s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()]


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    """A model changed without a migration fails here (what `alembic check` reports)."""
    engine, _ = open_ledger(_url(tmp_path))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations differ; add a revision (alembic revision --autogenerate): {diff}"
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
    engine.dispose()


def test_the_revisions_form_one_chain_from_the_baseline() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1, "two heads: merge them with `alembic merge`"
    assert REVISIONS[-1] == BASELINE


def _energy_after_opening(url: str) -> None:
    """Opens the ledger as the daemon does (which upgrades it) and answers the old run's energy from it."""
    engine, sessions = open_ledger(url)
    with sessions() as session:
        check_energy(run_energy(session, get_run(session, RUN_ID)))
    engine.dispose()


@pytest.mark.parametrize("revision", REVISIONS)
def test_upgrade_from_each_revision_keeps_the_data(tmp_path: Path, revision: str) -> None:
    url = _url(tmp_path)
    engine = make_engine(url)
    ledger_at(engine, revision)
    with engine.connect() as conn:
        before = row_counts(conn)
    engine.dispose()

    _energy_after_opening(url)

    engine = make_engine(url)
    with engine.connect() as conn:
        after = row_counts(conn)
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
    engine.dispose()
    assert {table: after.get(table) for table in before} == before  # later revisions may add tables, never lose rows


def test_ledger_from_before_migrations_is_stamped_not_recreated(tmp_path: Path, daemon_factory) -> None:
    """The daemon itself, as a process, starts on such a ledger (the PostgreSQL tests do the same there)."""
    url = _url(tmp_path)
    engine = make_engine(url)
    ledger_before_migrations(engine)
    with engine.connect() as conn:
        assert "alembic_version" not in inspect(conn).get_table_names()
        before = row_counts(conn)
    engine.dispose()

    d = daemon_factory(db=url)
    with d.client() as c:
        check_energy(c.get(f"/api/v1/runs/{RUN_ID}/energy").json())

    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
        after = row_counts(conn)
    engine.dispose()
    assert after["samples"] >= before["samples"] and after["phases"] == before["phases"]


def test_a_database_with_part_of_a_ledger_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    other = create_engine(f"sqlite:///{path}")
    with other.begin() as conn:
        conn.execute(text("CREATE TABLE runs (id INTEGER PRIMARY KEY, note TEXT)"))
        conn.execute(text("INSERT INTO runs (note) VALUES ('not ours')"))
    other.dispose()
    with pytest.raises(LedgerError, match="not a ledger this daemon wrote"):
        open_ledger(f"sqlite:///{path}")
    other = create_engine(f"sqlite:///{path}")
    with other.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"runs"}
        assert conn.execute(text("SELECT note FROM runs")).scalar_one() == "not ours"
    other.dispose()
    assert "runs" in BASELINE_TABLES


def test_a_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    url = _url(tmp_path)
    engine, _ = open_ledger(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dcafe'"))
    engine.dispose()
    with pytest.raises(LedgerError, match="newer than this daemon knows"):
        open_ledger(url)


def test_a_damaged_file_gets_a_clear_error_not_a_new_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    with pytest.raises(LedgerError):
        open_ledger(f"sqlite:///{path}")
    assert path.read_bytes()[16:32] == b"\xff" * 16


CPU_SECONDS_COLUMNS = {"devices": "idle_power_w", "samples": "cpu_busy_s", "process_samples": "cpu_time_s"}


def _columns(conn, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


def _downgrade_keeps_rows(engine, revision: str, before: dict[str, int]) -> None:
    """Downgrades to `revision` and checks every table's rows are still there (sample blocks are derived: a
    migration may drop them for the daemon to rebuild)."""
    from alembic import command

    with engine.connect() as conn:
        # SQLite drops a column by copying the table, which the other tables' foreign keys refuse while on.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        command.downgrade(alembic_config(conn), revision)
        conn.commit()
    derived = {"sample_blocks", "block_watermarks"}
    with engine.connect() as conn:
        kept = {t: n for t, n in row_counts(conn).items() if t in before and t not in derived}
        assert kept == {t: n for t, n in before.items() if t not in derived}


def test_0006_adds_the_cpu_seconds_columns_empty_on_old_rows_and_goes_back(tmp_path: Path) -> None:
    """From 0004 with data: the new columns arrive nullable and empty (the old run, on a GPU only, keeps all of
    its energy as its share: GPUs are the run's); downgrading to 0005 removes them and keeps the rows (sample
    blocks are derived, dropped by 0005 and rebuilt by the daemon)."""
    url = _url(tmp_path)
    engine = make_engine(url)
    ledger_at(engine, "0004")
    with engine.connect() as conn:
        before = row_counts(conn)
        assert all(col not in _columns(conn, table) for table, col in CPU_SECONDS_COLUMNS.items())
    engine.dispose()

    engine, sessions = open_ledger(url)
    with engine.connect() as conn:
        for table, col in CPU_SECONDS_COLUMNS.items():
            assert col in _columns(conn, table)
            assert conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE {col} IS NOT NULL")).scalar_one() == 0
    with sessions() as session:
        answer = run_energy(session, get_run(session, RUN_ID))
    check_energy(answer)
    assert answer["total"]["attribution"] == "node" and answer["run_share"]["attribution"] == "run-share"
    assert answer["run_share"]["energy_j"] == answer["total"]["energy_j"]
    assert all(p["run_share_j"] == p["energy_j"] for p in answer["phases"])

    _downgrade_keeps_rows(engine, "0005", before)
    with engine.connect() as conn:
        assert all(col not in _columns(conn, table) for table, col in CPU_SECONDS_COLUMNS.items())
    engine.dispose()


def test_0007_adds_the_sm_seconds_column_empty_on_old_rows_and_goes_back(tmp_path: Path) -> None:
    """From 0006 with data: the column arrives nullable and empty (the old run's GPU, shared with no run,
    stays its whole); downgrading to 0006 removes it and keeps the rows."""
    url = _url(tmp_path)
    engine = make_engine(url)
    ledger_at(engine, "0006")
    with engine.connect() as conn:
        before = row_counts(conn)
        assert "gpu_sm_s" not in _columns(conn, "process_samples")
    engine.dispose()

    engine, sessions = open_ledger(url)
    with engine.connect() as conn:
        assert "gpu_sm_s" in _columns(conn, "process_samples")
        assert conn.execute(text("SELECT COUNT(*) FROM process_samples WHERE gpu_sm_s IS NOT NULL")).scalar_one() == 0
    with sessions() as session:
        answer = run_energy(session, get_run(session, RUN_ID))
    check_energy(answer)
    assert answer["run_share"]["energy_j"] == answer["total"]["energy_j"]

    _downgrade_keeps_rows(engine, "0006", before)
    with engine.connect() as conn:
        assert "gpu_sm_s" not in _columns(conn, "process_samples")
    engine.dispose()


def test_0008_gives_members_their_own_end_from_their_run_and_goes_back(tmp_path: Path) -> None:
    """From 0007 with data: the old run's member takes the run's status and end (it ended with it), has no tags
    and is not watched for dying; downgrading to 0007 removes the columns and keeps the rows."""
    url = _url(tmp_path)
    engine = make_engine(url)
    ledger_at(engine, "0007")
    with engine.connect() as conn:
        before = row_counts(conn)
        assert "status" not in _columns(conn, "run_members")
        run_end = conn.execute(text("SELECT ended_at FROM runs")).scalar_one()
    engine.dispose()

    engine, sessions = open_ledger(url)
    with engine.connect() as conn:
        assert {"status", "ended_at", "tags", "last_seen_at", "pid_visible"} <= _columns(conn, "run_members")
        rows = conn.execute(text("SELECT status, ended_at, tags, pid_visible FROM run_members")).all()
        assert [tuple(r) for r in rows] == [("completed", run_end, None, 0)]
    with sessions() as session:
        check_energy(run_energy(session, get_run(session, RUN_ID)))

    _downgrade_keeps_rows(engine, "0007", before)
    with engine.connect() as conn:
        assert "status" not in _columns(conn, "run_members")
    engine.dispose()
