"""The REST API v1 (see the REST contract in DESIGN.md), /metrics and the dashboard."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telemetry_service import __version__
from telemetry_service.api.auth import TokenAuth
from telemetry_service.api.energy_cache import AnswerCache, answer_key
from telemetry_service.api.limits import BodyLimit
from telemetry_service.api.metrics import DaemonCollector
from telemetry_service.api.schemas import MAX_BATCH, MAX_POINTS, Accepted, DeviceOut, PhaseIn, RunCreate, RunStop
from telemetry_service.daemon import Daemon
from telemetry_service.gaps import daemon_downtime
from telemetry_service.report import device_id, run_energy, run_summary
from telemetry_service.runs import RunError, add_phases, get_run, register, stop
from telemetry_service.series import COLUMNS, device_series
from telemetry_service.store.models import Device, Node, Phase, Run

T = TypeVar("T")
DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "web"
MAX_BODY_BYTES = 8 * 2**20
# How long an energy answer for a just-stopped run waits for the counter update after its end to be stored.
SETTLE_WAIT_S = 3.0


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


def create_app(daemon: Daemon, token: str | None = None) -> FastAPI:
    """The API over `daemon`; with a `token`, requests must carry it (see api/auth.py)."""
    app = FastAPI(title="joulemeter telemetry daemon", version=__version__,
                  description="Energy per run, phase and device, measured on this node.")
    app.state.daemon = daemon
    answers = AnswerCache()
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))

    async def write(job: Callable[[Session], T]) -> T:
        fut: Future[T] = daemon.writer.submit(job)
        return await asyncio.wrap_future(fut)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Say where and what, without echoing the input: it may hold NaN or megabytes that JSON cannot carry back.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(RunError)
    async def _run_error(_: Request, exc: RunError) -> JSONResponse:
        return _error(exc.status, exc.detail)

    # Outermost last: CORS answers preflights, then the token is checked, then the body is bounded.
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if token is not None:
        app.add_middleware(TokenAuth, token=token, public_read=daemon.settings.public_read)
    if daemon.settings.cors_origin:
        app.add_middleware(CORSMiddleware, allow_origins=daemon.settings.cors_origin, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)

    # --- node -------------------------------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz(request: Request) -> dict[str, Any]:
        if not getattr(request.state, "authenticated", True):  # a token is set and this request lacks it
            return {"status": "ok"}
        s = daemon.sampler
        gpus = [d for d in s.devices.values() if d.info.kind == "gpu"]
        return {
            "status": "ok", "version": __version__, "node": daemon.settings.node, "hostname": socket.gethostname(),
            "uptime_s": time.time() - daemon.started_at, "db": daemon.engine.dialect.name,
            "gpus": len(gpus), "simulated_gpus": sum(1 for d in gpus if d.info.source == "simulated"),
            "sensors": daemon.sensors.status,
            "sampler": {"interval_s": s.interval, "ticks": s.stats.ticks, "missed_ticks": s.stats.missed_ticks,
                        "worst_gap_s": s.stats.worst_gap_s, "sensor_errors": s.stats.sensor_errors},
        }

    @app.get("/api/v1/devices", response_model=list[DeviceOut])
    def devices(node: str | None = None) -> list[DeviceOut]:
        with daemon.sessions() as session:
            q = select(Device, Node.name).join(Node)
            q = q.where(Node.name == node) if node else q.where(Device.node_id == daemon.node_id)
            out = []
            for dev, node_name in session.execute(q.order_by(Device.kind, Device.key)):
                state = daemon.sampler.devices.get(dev.key) if dev.node_id == daemon.node_id else None
                latest = None
                if state is not None and state.latest is not None:
                    r = state.latest
                    latest = {"t": r.t, "power_w": r.power_w, "energy_j": state.energy_j, "util_pct": r.util_pct,
                              "mem_used_bytes": r.mem_used_bytes, "mem_total_bytes": r.mem_total_bytes,
                              "temp_c": r.temp_c, "sm_clock_mhz": r.sm_clock_mhz, "timing": r.counter_timing}
                out.append(DeviceOut(id=device_id(node_name, dev.key), node=node_name, key=dev.key, kind=dev.kind,
                                     index=dev.index, name=dev.name, uuid=dev.uuid, source=dev.source,
                                     energy_counter=dev.energy_counter, update_period_s=dev.update_period_s,
                                     present=dev.present, latest=latest))
            return out

    def _device(session: Session, did: str) -> Device:
        node_name, _, key = did.rpartition("/")
        node_name = node_name or daemon.settings.node
        dev = session.execute(select(Device).join(Node).where(Node.name == node_name, Device.key == key)).scalar_one_or_none()
        if dev is None:
            raise RunError(404, f"no device {did!r}; GET /api/v1/devices lists them")
        return dev

    fields_doc = f"comma-separated columns to return (default all): {', '.join(COLUMNS)}"

    @app.get("/api/v1/devices/{node}/{key}/samples")
    def node_device_samples(node: str, key: str, start: float | None = None, end: float | None = None,
                            max_points: int = Query(2000, ge=2, le=MAX_POINTS),
                            fields: str | None = Query(None, description=fields_doc)) -> dict[str, Any]:
        now = time.time()
        return _samples(f"{node}/{key}", start if start is not None else now - 300, end if end is not None else now,
                        max_points, fields)

    def _samples(did: str, start: float, end: float, max_points: int, fields: str | None = None) -> dict[str, Any]:
        wanted = COLUMNS if fields is None else tuple(f.strip() for f in fields.split(",") if f.strip())
        unknown = sorted(set(wanted) - set(COLUMNS))
        if unknown:
            raise RunError(422, f"unknown fields {unknown}; choose from {list(COLUMNS)}")
        if not (math.isfinite(start) and math.isfinite(end)):
            raise RunError(422, "start and end must be finite")
        if end < start:
            raise RunError(422, f"end ({end}) is before start ({start})")
        with daemon.sessions() as session:
            dev = _device(session, did)
            columns, stored = device_series(session, dev.id, start, end, max_points, wanted)
            # Where the daemon was down, so a chart breaks its line there instead of drawing across.
            downtime = daemon_downtime(session, {dev.node_id: dev.node.name}, start, end)
            return {"device": did, "kind": dev.kind, "source": dev.source, "energy_counter": dev.energy_counter,
                    "start": start, "end": end, "stored_points": stored, "points": len(columns["t"]), **columns,
                    "downtime": downtime}

    # --- runs -----------------------------------------------------------------------------------------------
    @app.post("/api/v1/runs", status_code=201)
    async def create_run(body: RunCreate, response: Response) -> dict[str, Any]:
        vis = daemon.visible_keys(body.visible_devices, body.cuda_device_order)
        now = time.time()

        def job(session: Session) -> tuple[dict[str, Any], bool]:
            run, created = register(session, body, daemon.node_id, vis.keys, now)
            return run_summary(run), created

        try:
            summary, created = await write(job)
        except IntegrityError:  # another daemon on a shared ledger created the same run_id a moment ago
            summary, created = await write(job)
        daemon.refresh_watched_pids()
        if not created:
            response.status_code = 200
        return {**summary, "warnings": vis.warnings}

    @app.get("/api/v1/runs")
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
            return [run_summary(r, _totals(session, r)) for r in runs[offset:offset + limit]]

    def _totals(session: Session, run: Run) -> dict[str, Any] | None:
        if run.totals is not None:
            return run.totals
        if run.status != "running":
            return None
        return _energy_of(session, run)["total"]

    @app.get("/api/v1/runs/{run_id}")
    def get_one(run_id: str) -> dict[str, Any]:
        with daemon.sessions() as session:
            run = get_run(session, run_id)
            return run_summary(run, _totals(session, run))

    @app.post("/api/v1/runs/{run_id}/phases", status_code=202, response_model=Accepted)
    async def post_phases(run_id: str, phases: list[PhaseIn]) -> Accepted:
        if len(phases) > MAX_BATCH:
            raise RunError(413, f"{len(phases)} phases in one batch; at most {MAX_BATCH}")
        now = time.time()
        n = await write(lambda s: add_phases(s, run_id, phases, daemon.node_id, now))
        return Accepted(accepted=n)

    @app.get("/api/v1/runs/{run_id}/phases")
    def list_phases(run_id: str, start: float | None = None, end: float | None = None, name: str | None = None,
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

    @app.post("/api/v1/runs/{run_id}/stop")
    async def stop_run(run_id: str, body: RunStop | None = None) -> dict[str, Any]:
        body = body or RunStop()
        now = time.time()
        run_summary_ = await write(lambda s: run_summary(stop(s, run_id, body, now)))
        daemon.refresh_watched_pids()
        ended = run_summary_["ended_at"]
        written = await asyncio.to_thread(daemon.sampler.wait_written, ended + 0.3, SETTLE_WAIT_S)

        # The energy is computed beside the writer, not in it: a long run's answer must not hold up samples.
        total = (await asyncio.to_thread(_energy, run_id))["total"]

        def totals_job(session: Session) -> dict[str, Any]:
            run = get_run(session, run_id)
            # Totals are fixed only once the samples up to the run's end are in; until then they are computed.
            run.totals = total if written else None
            return run_summary(run, total)

        return await write(totals_job)

    @app.get("/api/v1/runs/{run_id}/energy")
    async def energy(run_id: str) -> dict[str, Any]:
        with daemon.sessions() as session:
            ended = get_run(session, run_id).ended_at
        if ended is not None and time.time() - ended < 10 * SETTLE_WAIT_S:
            await asyncio.to_thread(daemon.sampler.wait_written, ended + 0.3, SETTLE_WAIT_S)

        return await asyncio.to_thread(_energy, run_id)

    def _energy(run_id: str) -> dict[str, Any]:
        with daemon.sessions() as session:
            return _energy_of(session, get_run(session, run_id))

    def _energy_of(session: Session, run: Run) -> dict[str, Any]:
        key = answer_key(session, run, time.time())
        return answers.get_or_compute(key, lambda: run_energy(session, run, daemon.settings.interval))

    @app.get("/api/v1/runs/{run_id}/samples")
    def run_samples(run_id: str, device: str, start: float | None = None, end: float | None = None,
                    max_points: int = Query(2000, ge=2, le=MAX_POINTS),
                    fields: str | None = Query(None, description=fields_doc)) -> dict[str, Any]:
        with daemon.sessions() as session:
            run = get_run(session, run_id)
            t0, t1 = run.started_at, run.ended_at if run.ended_at is not None else time.time()
        return _samples(device, t0 if start is None else start, t1 if end is None else end, max_points, fields)

    # --- Prometheus and the dashboard ---------------------------------------------------------------------------
    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if DASHBOARD_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="static")

        @app.get("/", include_in_schema=False)
        def dashboard() -> FileResponse:
            return FileResponse(DASHBOARD_DIR / "index.html")

    return app
