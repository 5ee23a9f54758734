"""A device's samples, over any interval or over a run's, and a run's energy."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from telemetry_service.api.context import SETTLE_WAIT_S, ApiContext, Instant
from telemetry_service.api.edge import CheckedRoute
from telemetry_service.gaps import daemon_downtime
from telemetry_service.runs import RunError, get_run
from telemetry_service.schemas import MAX_POINTS
from telemetry_service.series import COLUMNS, device_series
from telemetry_service.store.models import Device, Node

FIELDS_DOC = f"comma-separated columns to return (default all): {', '.join(COLUMNS)}"


def router(ctx: ApiContext) -> APIRouter:
    daemon = ctx.daemon
    api = APIRouter(route_class=CheckedRoute)

    def find_device(session: Session, did: str) -> Device:
        node_name, _, key = did.rpartition("/")
        node_name = node_name or daemon.settings.node
        dev = session.execute(select(Device).join(Node).where(Node.name == node_name, Device.key == key)).scalar_one_or_none()
        if dev is None:
            raise RunError(404, f"no device {did!r}; GET /api/v1/devices lists them")
        return dev

    def samples(did: str, start: float, end: float, max_points: int, fields: str | None = None) -> dict[str, Any]:
        wanted = COLUMNS if fields is None else tuple(f.strip() for f in fields.split(",") if f.strip())
        unknown = sorted(set(wanted) - set(COLUMNS))
        if unknown:
            raise RunError(422, f"unknown fields {unknown}; choose from {list(COLUMNS)}")
        if end < start:
            raise RunError(422, f"end ({end}) is before start ({start})")
        with daemon.sessions() as session:
            dev = find_device(session, did)
            columns, stored = device_series(session, dev.id, start, end, max_points, wanted)
            # Where the daemon was down, so a chart breaks its line there instead of drawing across.
            downtime = daemon_downtime(session, {dev.node_id: dev.node.name}, start, end)
            return {"device": did, "kind": dev.kind, "source": dev.source, "energy_counter": dev.energy_counter,
                    "start": start, "end": end, "stored_points": stored, "points": len(columns["t"]), **columns,
                    "downtime": downtime}

    @api.get("/api/v1/devices/{node}/{key}/samples")
    def node_device_samples(node: str, key: str, start: Instant = None, end: Instant = None,
                            max_points: int = Query(2000, ge=2, le=MAX_POINTS),
                            fields: str | None = Query(None, description=FIELDS_DOC)) -> dict[str, Any]:
        now = time.time()
        return samples(f"{node}/{key}", start if start is not None else now - 300, end if end is not None else now,
                       max_points, fields)

    @api.get("/api/v1/runs/{run_id}/energy")
    async def energy(run_id: str) -> dict[str, Any]:
        with daemon.sessions() as session:
            ended = get_run(session, run_id).ended_at
        if ended is not None and time.time() - ended < 10 * SETTLE_WAIT_S:
            await asyncio.to_thread(daemon.sampler.wait_written, ended + 0.3, SETTLE_WAIT_S)

        return await asyncio.to_thread(ctx.energy, run_id)

    @api.get("/api/v1/runs/{run_id}/samples")
    def run_samples(run_id: str, device: str, start: Instant = None, end: Instant = None,
                    max_points: int = Query(2000, ge=2, le=MAX_POINTS),
                    fields: str | None = Query(None, description=FIELDS_DOC)) -> dict[str, Any]:
        with daemon.sessions() as session:
            run = get_run(session, run_id)
            t0, t1 = run.started_at, run.ended_at if run.ended_at is not None else time.time()
        return samples(device, t0 if start is None else start, t1 if end is None else end, max_points, fields)

    return api
