"""The dashboard: its page and static files, when the dashboards folder ships with the daemon."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboards" / "web"


def mount(app: FastAPI, directory: Path = DASHBOARD_DIR) -> None:
    if not directory.is_dir():
        return
    app.mount("/static", StaticFiles(directory=directory), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(directory / "index.html")
