"""Runs: registration (idempotent per run_id), listing, one run, and its stop."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telemetry_service.api.context import SETTLE_WAIT_S, ApiContext
from telemetry_service.api.edge import CheckedRoute
from telemetry_service.members import pid_alive
from telemetry_service.report import run_summary
from telemetry_service.runs import get_run, member_view, register, stop, with_members
from telemetry_service.schemas import RunCreate, RunStop
from telemetry_service.store.models import Run

log = logging.getLogger(__name__)


def _refresh_watched_pids(ctx: ApiContext) -> None:
    # After a commit the answer must still go out: the sampler catches up at the next registration or stop.
    try:
        ctx.daemon.refresh_watched_pids()
    except Exception:
        log.exception("cannot refresh the processes watched for runs")


async def _settle(ctx: ApiContext, run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """A stopped run's answer with its energy: fixed as its totals once the samples up to its end are in."""
    written = await asyncio.to_thread(ctx.daemon.sampler.wait_written, summary["ended_at"] + 0.3, SETTLE_WAIT_S)
    # The energy is computed beside the writer, not in it: a long run's answer must not hold up samples.
    try:
        total = (await asyncio.to_thread(ctx.energy, run_id))["total"]
    except Exception:  # the stop is committed: answer it, with the totals left to be computed on reading
        log.exception("cannot compute the energy of run %r as it stops", run_id)
        return summary

    def totals_job(session: Session) -> dict[str, Any]:
        run = get_run(session, run_id)
        # Totals are fixed only once the samples up to the run's end are in; until then they are computed.
        run.totals = total if written else None
        return with_members(run, run_summary(run, total))

    return await ctx.write(totals_job)


def router(ctx: ApiContext) -> APIRouter:
    daemon = ctx.daemon
    api = APIRouter(route_class=CheckedRoute)

    @api.post("/api/v1/runs", status_code=201)
    async def create_run(body: RunCreate, response: Response) -> dict[str, Any]:
        vis = daemon.visible_keys(body.visible_devices, body.cuda_device_order)
        now = time.time()

        visible = body.pid is not None and pid_alive(body.pid, now)

        def job(session: Session) -> tuple[dict[str, Any], bool, list[str]]:
            reg = register(session, body, daemon.node_id, vis.keys, now, visible)
            summary = with_members(reg.run, run_summary(reg.run, config=False))
            # Which member this registrant is: a later one joins the run rather than describing it.
            mine = {"index": reg.run.members.index(reg.member), **member_view(reg.member)}
            return {**summary, "member": mine}, reg.created, reg.warnings

        try:
            summary, created, warnings = await ctx.write(job)
        except IntegrityError:  # another daemon on a shared ledger created the same run_id a moment ago
            summary, created, warnings = await ctx.write(job)
        _refresh_watched_pids(ctx)
        if not created:
            response.status_code = 200
        return {**summary, "warnings": vis.warnings + warnings}

    @api.get("/api/v1/runs")
    def list_runs(status: str | None = None, name: str | None = None, tag: str | None = None,
                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
        with daemon.sessions() as session:
            q = select(Run)
            if status:
                q = q.where(Run.status == status)
            if name:
                q = q.where(Run.name.contains(name, autoescape=True))
            runs = session.scalars(q.order_by(Run.started_at.desc())).all()
            if tag:
                key, _, value = tag.partition(":")
                runs = [r for r in runs if key in (r.tags or {}) and (not value or str(r.tags[key]) == value)]
            return [run_summary(r, ctx.totals(session, r), config=False) for r in runs[offset:offset + limit]]

    @api.get("/api/v1/runs/{run_id}")
    def get_one(run_id: str) -> dict[str, Any]:
        with daemon.sessions() as session:
            run = get_run(session, run_id)
            return with_members(run, run_summary(run, ctx.totals(session, run)))

    @api.post("/api/v1/runs/{run_id}/stop")
    async def stop_run(run_id: str, body: RunStop | None = None) -> dict[str, Any]:
        body = body or RunStop()
        now = time.time()

        def job(session: Session) -> dict[str, Any]:
            run = stop(session, run_id, body, daemon.node_id, now)
            return with_members(run, run_summary(run))

        summary = await ctx.write(job)
        if summary["ended_at"] is None:  # other members still run: the run's energy is not settled yet
            _refresh_watched_pids(ctx)
            return summary
        _refresh_watched_pids(ctx)
        return await _settle(ctx, run_id, summary)

    return api
