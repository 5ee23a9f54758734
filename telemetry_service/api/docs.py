"""/docs (Swagger UI) and /redoc with their scripts and styles served by the daemon, not a CDN: nodes are often
air-gapped, and a page that needs the internet shows nothing there. The assets come from the fastapi-offline
package (MIT)."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
PREFIX = "/docs-static"


def mount(app: FastAPI) -> None:
    """For an app made with docs_url=None and redoc_url=None."""
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-static")
    title = f"{app.title} - API"

    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")  # behind a proxy that adds a path prefix

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        root = base(request)
        return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=title,
                                   oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
                                   swagger_js_url=f"{root}{PREFIX}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{PREFIX}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{PREFIX}/favicon.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = base(request)
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=title,
                              redoc_js_url=f"{root}{PREFIX}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{PREFIX}/favicon.png", with_google_fonts=False)
