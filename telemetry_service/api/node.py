"""The node: its health, its devices and their latest readings, and the Prometheus metrics."""

from __future__ import annotations

import socket
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import select

from telemetry_service import __version__
from telemetry_service.api.context import ApiContext
from telemetry_service.api.edge import CheckedRoute
from telemetry_service.api.metrics import DaemonCollector
from telemetry_service.api.schemas import DeviceOut
from telemetry_service.report import device_id
from telemetry_service.store.models import Device, Node


def router(ctx: ApiContext) -> APIRouter:
    daemon = ctx.daemon
    api = APIRouter(route_class=CheckedRoute)
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))

    @api.get("/healthz")
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

    @api.get("/api/v1/devices", response_model=list[DeviceOut])
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

    @api.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api
