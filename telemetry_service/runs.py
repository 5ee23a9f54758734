"""Run bookkeeping: registration (idempotent per run_id), phase batches (idempotent per marker), stop.

Each function here is a writer job: it runs inside the ledger writer's transaction and raises RunError with a
status and a message a user can act on; a rejected request changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from telemetry_service.schemas import PhaseIn, RunCreate, RunStop
from telemetry_service.store.models import Phase, Run, RunMember
from telemetry_service.store.writer import Refused

# Instants from the client and the daemon come from the same host clock; this much disagreement is tolerated.
CLOCK_SLACK_S = 1.0
# A marker dated this far in the future says the client's clock is not ours.
FUTURE_SLACK_S = 300.0


class RunError(Refused):
    """Bad input for the ledger's current state, found before anything was written; `status` is the HTTP answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def get_run(session: Session, run_id: str) -> Run:
    run = session.scalars(select(Run).where(Run.run_id == run_id)).one_or_none()
    if run is None:
        raise RunError(404, f"no run with id {run_id!r}")
    return run


def register(session: Session, body: RunCreate, node_id: int, device_keys: list[str], now: float) -> tuple[Run, bool]:
    """Creates the run, or joins an existing one with the same run_id (another rank or node). Returns (run, created)."""
    started = body.started_at if body.started_at is not None else now
    if started > now + FUTURE_SLACK_S:
        raise RunError(422, f"started_at {started} is in the future of this node's clock ({now})")
    run = None
    if body.run_id is not None:
        run = session.scalars(select(Run).where(Run.run_id == body.run_id)).one_or_none()
    created = run is None
    if run is None:
        run = Run(run_id=body.run_id or uuid.uuid4().hex, name=body.name, status="running", started_at=started,
                  tags=dict(body.tags), config=dict(body.config), metrics={})
        session.add(run)
        session.flush()
    else:
        run.started_at = min(run.started_at, started)
        if body.tags:
            run.tags = {**(run.tags or {}), **body.tags}
    same = [m for m in run.members if m.node_id == node_id and m.pid == body.pid]
    if not same:
        session.add(RunMember(run_pk=run.id, node_id=node_id, pid=body.pid, host=body.host,
                              device_keys=device_keys, joined_at=now))
        session.flush()
        session.refresh(run)
    return run, created


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect.name
    # Core statements on the table: a batch of thousands of markers skips the ORM's per-row bookkeeping.
    if dialect == "sqlite":
        stmt = sqlite.insert(Phase.__table__).on_conflict_do_nothing()
    elif dialect == "postgresql":
        stmt = postgresql.insert(Phase.__table__).on_conflict_do_nothing()
    else:  # other back ends: filter out what is already there
        existing = {(r.name, r.start, r.end) for r in session.execute(
            select(Phase.name, Phase.start, Phase.end).where(Phase.run_pk == rows[0]["run_pk"],
                                                             Phase.node_id == rows[0]["node_id"]))}
        rows = [r for r in rows if (r["name"], r["start"], r["end"]) not in existing]
        stmt = insert(Phase.__table__)
    if rows:
        session.connection().execute(stmt, rows)


def add_phases(session: Session, run_id: str, phases: list[PhaseIn], node_id: int, now: float) -> int:
    run = session.execute(select(Run.id, Run.started_at, Run.ended_at).where(Run.run_id == run_id)).one_or_none()
    if run is None:
        raise RunError(404, f"no run with id {run_id!r}")
    lo = run.started_at - CLOCK_SLACK_S
    hi = (run.ended_at + CLOCK_SLACK_S) if run.ended_at is not None else now + FUTURE_SLACK_S
    for i, p in enumerate(phases):
        if p.start < lo or p.end > hi:
            when = f"the run's time [{run.started_at}, {run.ended_at}]" if run.ended_at is not None \
                else f"the run's time (it started at {run.started_at}; now is {now})"
            raise RunError(422, f"phase {i} ({p.name!r}, {p.start} to {p.end}) lies outside {when}")
    rows = [{"run_pk": run.id, "node_id": node_id, "name": p.name, "start": p.start, "end": p.end, "step": p.step,
             "attrs": p.attrs} for p in phases]
    # One marker sent twice (a retry, a replayed spool) or twice within a batch is one phase.
    unique = list({(r["name"], r["start"], r["end"]): r for r in rows}.values())
    if unique:
        _insert_ignoring_duplicates(session, unique)
    return len(phases)


def stop(session: Session, run_id: str, body: RunStop, now: float) -> Run:
    run = get_run(session, run_id)
    end = body.end if body.end is not None else now
    if end < run.started_at:
        raise RunError(422, f"end {end} is before the run started ({run.started_at})")
    if end > now + FUTURE_SLACK_S:
        raise RunError(422, f"end {end} is in the future of this node's clock ({now})")
    if run.status == "running":
        run.status = body.status
        run.ended_at = end
    else:  # another rank stopping the same run: the run ends when its last member does
        run.ended_at = max(run.ended_at or end, end)
        if body.status == "failed":
            run.status = "failed"
    if body.metrics:
        run.metrics = {**(run.metrics or {}), **body.metrics}
    run.totals = None
    return run
