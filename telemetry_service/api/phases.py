"""A run's phases: batches of markers in (idempotent per marker), and the phases out."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from telemetry_service.api.context import ApiContext, Instant
from telemetry_service.api.edge import CheckedRoute
from telemetry_service.api.schemas import Accepted
from telemetry_service.runs import RunError, add_phases, get_run
from telemetry_service.schemas import MAX_BATCH, MAX_POINTS, PhaseIn
from telemetry_service.store.models import Node, Phase


def router(ctx: ApiContext) -> APIRouter:
    daemon = ctx.daemon
    api = APIRouter(route_class=CheckedRoute)

    @api.post("/api/v1/runs/{run_id}/phases", status_code=202, response_model=Accepted)
    async def post_phases(run_id: str, phases: list[PhaseIn],
                          pid: int | None = Query(None, ge=0, le=2**31 - 1)) -> Accepted:
        if len(phases) > MAX_BATCH:
            raise RunError(413, f"{len(phases)} phases in one batch; at most {MAX_BATCH}")
        now = time.time()
        n = await ctx.write(lambda s: add_phases(s, run_id, phases, daemon.node_id, now, pid))
        return Accepted(accepted=n)

    @api.get("/api/v1/runs/{run_id}/phases")
    def list_phases(run_id: str, start: Instant = None, end: Instant = None, name: str | None = None,
                    limit: int = Query(10_000, ge=1, le=MAX_POINTS)) -> dict[str, Any]:
        with daemon.sessions() as session:
            run = get_run(session, run_id)
            q = select(Phase.name, Phase.start, Phase.end, Phase.step, Phase.attrs, Node.name).join(Node).where(Phase.run_pk == run.id)
            if start is not None:
                q = q.where(Phase.end >= start)
            if end is not None:
                q = q.where(Phase.start <= end)
            if name:
                q = q.where(Phase.name == name)
            rows = session.execute(q.order_by(Phase.start).limit(limit + 1)).all()
            return {"phases": [{"name": r[0], "start": r[1], "end": r[2], "step": r[3], "attrs": r[4], "node": r[5]}
                               for r in rows[:limit]], "truncated": len(rows) > limit}

    return api
