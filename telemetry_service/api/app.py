"""The REST API v1 (see the REST contract in DESIGN.md), /metrics and the dashboard."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from telemetry_service import __version__
from telemetry_service.api import dashboard, docs, node, phases, runs, samples
from telemetry_service.api.auth import TokenAuth
from telemetry_service.api.context import ApiContext
from telemetry_service.api.edge import ContainErrors, install_handlers
from telemetry_service.api.export_format import CsvFormat
from telemetry_service.api.limits import BodyLimit
from telemetry_service.daemon import Daemon

MAX_BODY_BYTES = 8 * 2**20


def create_app(daemon: Daemon, token: str | None = None) -> FastAPI:
    """The API over `daemon`; with a `token`, requests must carry it (see api/auth.py)."""
    app = FastAPI(title="joulemeter telemetry daemon", version=__version__,
                  description="Energy per run, phase and device, measured on this node.", docs_url=None,
                  redoc_url=None)
    app.state.daemon = daemon
    install_handlers(app)
    ctx = ApiContext(daemon)
    for module in (node, samples, runs, phases):
        app.include_router(module.router(ctx))
    docs.mount(app)
    dashboard.mount(app)

    # Outermost last: errors are contained, CORS answers preflights, then the token is checked, then the body is
    # bounded; innermost, a run's JSON answer is turned into CSV where asked.
    app.add_middleware(CsvFormat)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if token is not None:
        app.add_middleware(TokenAuth, token=token, public_read=daemon.settings.public_read)
    if daemon.settings.cors_origin:
        app.add_middleware(CORSMiddleware, allow_origins=daemon.settings.cors_origin, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.add_middleware(ContainErrors)
    return app
