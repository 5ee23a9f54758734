"""Ledgers as earlier versions of the daemon left them, and the energy they must still answer after an upgrade.

`write_history` fills a ledger through the tables as they stand (reflected, so it works at any revision): one
node, one GPU with an energy counter rising 10 W x t, a completed run over [T0, T0 + 10] with one phase over
[T0 + 2, T0 + 6]. Known answers: the phase took 40 J, the run 100 J.
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, MetaData, func, insert, select, text

from telemetry_service.store.migrate import BASELINE, alembic_config

T0 = 1_700_000_000.0
NODE = "old-node"
RUN_ID = "before-upgrade"
POWER_W = 10.0
PHASE_J = 40.0
RUN_J = 100.0


def write_history(conn: Connection) -> None:
    meta = MetaData()
    meta.reflect(conn)
    t = meta.tables
    node_id = conn.execute(insert(t["nodes"]).values(name=NODE, first_seen=T0 - 60, last_started=T0 - 60)
                           .returning(t["nodes"].c.id)).scalar_one()
    dev_id = conn.execute(insert(t["devices"]).values(
        node_id=node_id, key="gpu0", kind="gpu", index=0, name="Old GPU", uuid="GPU-0ld", source="nvml",
        energy_counter=True, update_period_s=0.1, counter_wrap_j=None, present=True).returning(t["devices"].c.id)
    ).scalar_one()
    run_pk = conn.execute(insert(t["runs"]).values(
        run_id=RUN_ID, name="distil", status="completed", started_at=T0, ended_at=T0 + 10, tags={"slurm_job_id": "7"},
        config={"lr": 1e-4}, metrics={"accuracy": 0.9}, totals=None).returning(t["runs"].c.id)).scalar_one()
    conn.execute(insert(t["run_members"]).values(run_pk=run_pk, node_id=node_id, pid=4242, host=NODE,
                                                 device_keys=["gpu0"], joined_at=T0))
    conn.execute(insert(t["phases"]).values(run_pk=run_pk, node_id=node_id, name="train", start=T0 + 2, end=T0 + 6,
                                            step=0, attrs={"epoch": 0}))
    rows: list[dict[str, Any]] = []
    for i in range(-20, 121):  # 0.1 s apart, from 2 s before the run to 2 s after it
        ts = T0 + i * 0.1
        rows.append({"device_id": dev_id, "t": ts, "power_w": POWER_W, "energy_j": POWER_W * (ts - T0 + 2),
                     "energy_t": ts, "counter_raw_j": 5000.0 + POWER_W * (ts - T0), "timing": "grid"})
    conn.execute(insert(t["samples"]), rows)
    conn.execute(insert(t["sampler_sessions"]).values(node_id=node_id, started_at=T0 - 60, last_sample_at=T0 + 12,
                                                      stopped_at=T0 + 12, interval_s=0.1))


def row_counts(conn: Connection) -> dict[str, int]:
    meta = MetaData()
    meta.reflect(conn)
    return {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in meta.tables.items() if name != "alembic_version"}


def ledger_at(engine: Engine, revision: str) -> None:
    """Creates the schema of `revision` (not head), as a daemon of that version would have, and fills it."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
        write_history(conn)


def ledger_before_migrations(engine: Engine) -> None:
    """A ledger as the daemon made it before migrations existed: the baseline tables (as revision 0001 creates
    them, which is what create_all made then) and no alembic_version."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
        write_history(conn)


def check_energy(answer: dict[str, Any]) -> None:
    """The known answers, from a daemon's GET /api/v1/runs/{RUN_ID}/energy on an upgraded ledger."""
    phases = {p["name"]: p for p in answer["phases"]}
    assert set(phases) == {"train"}
    assert phases["train"]["energy_j"] == pytest.approx(PHASE_J, abs=1e-6)
    assert phases["train"]["method"] == "counter"
    assert answer["total"]["energy_j"] == pytest.approx(RUN_J, abs=1e-6)
    assert answer["total"]["by_node"] == {NODE: answer["total"]["energy_j"]}
    assert answer["run"]["metrics"] == {"accuracy": 0.9}
