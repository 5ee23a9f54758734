"""Run bookkeeping: registration (a member per process, idempotent per process), phase batches (idempotent per
marker), stops (per member: a run ends with its last member).

Each function here is a writer job: it runs inside the ledger writer's transaction and raises RunError with a
status and a message a user can act on; a rejected request changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
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


@dataclass
class Registration:
    run: Run
    member: RunMember
    created: bool  # the run is new
    warnings: list[str]


def _when(t: float | None) -> str:
    return "never" if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def register(session: Session, body: RunCreate, node_id: int, device_keys: list[str], now: float,
             pid_visible: bool = False) -> Registration:
    """Creates the run, or adds a member to a running one with the same run_id (another rank or node). A process
    registering again is the same member (a retry, a replay); a new process cannot join a run that has ended."""
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
    member = next((m for m in run.members if m.node_id == node_id and m.pid == body.pid), None)
    if member is not None:
        return Registration(run, member, created, [])
    if run.status != "running":
        raise RunError(409, f"run {run.run_id!r} ended at {_when(run.ended_at)} ({run.status}); a finished run "
                            "cannot be joined: register under a new run_id")
    run.started_at = min(run.started_at, started)
    member = RunMember(run_pk=run.id, node_id=node_id, pid=body.pid, host=body.host, device_keys=device_keys,
                       joined_at=now, status="running", tags=dict(body.tags), pid_visible=pid_visible)
    session.add(member)
    session.flush()
    session.refresh(run)
    warnings = [] if created else _joined_notes(run, body)
    return Registration(run, member, created, warnings)


def _joined_notes(run: Run, body: RunCreate) -> list[str]:
    # A later registrant joins: the run stays as its first registrant described it.
    kept = [what for what, mine, theirs in (("name", body.name, run.name), ("config", body.config, run.config),
                                            ("tags", body.tags, run.tags)) if mine and mine != theirs]
    if not kept:
        return []
    return [(f"joined run {run.run_id!r} as member {len(run.members)}; its {', '.join(kept)} stay(s) as its first "
             "registrant gave them (this member's tags are kept with the member)")]


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


def add_phases(session: Session, run_id: str, phases: list[PhaseIn], node_id: int, now: float,
               pid: int | None = None) -> int:
    """Stores markers that lie within the run's time: from its earliest member's start to its last member's end,
    open while any member runs. `pid` names the member sending them: its last sign of life moves on."""
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
    if pid is not None and phases:
        _seen(session, run.id, node_id, pid, max(p.end for p in phases))
    return len(phases)


def _seen(session: Session, run_pk: int, node_id: int, pid: int, t: float) -> None:
    member = session.scalars(select(RunMember).where(RunMember.run_pk == run_pk, RunMember.node_id == node_id,
                                                     RunMember.pid == pid)).first()
    if member is not None:
        member.last_seen_at = max(member.last_seen_at or t, t)


def _settle(run: Run) -> None:
    """The run follows its members: running while any runs, then ended at the last one's end, failed if any
    member failed (a lost member is shown as such among the members; it does not fail the run)."""
    run.totals = None
    if not run.members or any(m.status == "running" for m in run.members):
        return
    run.ended_at = max(m.ended_at for m in run.members if m.ended_at is not None)
    run.status = "failed" if any(m.status == "failed" for m in run.members) else "completed"


def stop(session: Session, run_id: str, body: RunStop, node_id: int, now: float) -> Run:
    """Ends the member that asks (by pid on this node), or with no pid every member still running."""
    run = get_run(session, run_id)
    end = body.end if body.end is not None else now
    if end < run.started_at:
        raise RunError(422, f"end {end} is before the run started ({run.started_at})")
    if end > now + CLOCK_SLACK_S:
        raise RunError(422, f"end {end} is in the future of this node's clock ({now})")
    if body.pid is None:
        ending = [m for m in run.members if m.status == "running"]
    else:
        ending = [m for m in run.members if m.node_id == node_id and m.pid == body.pid]
        if not ending:
            raise RunError(409, f"process {body.pid} on this node is not a member of run {run_id!r}")
    # A member already stopped is a retried stop; a lost one's own stop is late news of how it ended.
    for member in (m for m in ending if m.status in ("running", "lost")):
        member.status = body.status
        member.ended_at = end
    if not run.members:  # a run from before members had their own end
        run.status, run.ended_at = body.status, end
    if body.metrics:
        run.metrics = {**(run.metrics or {}), **body.metrics}
    _settle(run)
    return run


def end_lost_members(session: Session, member_ids: list[int]) -> list[str]:
    """Ends members whose process is gone as `lost`, at their last sign of life. Returns the runs they belong to."""
    members = session.scalars(select(RunMember).where(RunMember.id.in_(member_ids),
                                                      RunMember.status == "running")).all()
    for member in members:
        member.status = "lost"
        member.ended_at = max(member.last_seen_at or member.joined_at, member.run.started_at)
        _settle(member.run)
    return sorted({m.run.run_id for m in members})


def member_view(member: RunMember) -> dict[str, Any]:
    return {"pid": member.pid, "host": member.host, "status": member.status, "ended_at": member.ended_at,
            "tags": member.tags or {}}


def with_members(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    """A run's summary with how each member stands (the summary lists them in the same order)."""
    members = [{**shown, **member_view(m)} for shown, m in zip(summary.get("members", []), run.members)]
    return {**summary, "members": members}
