"""The API's edge: unstorable text refused before anything is written, errors answered without breaking anything.

Every route checks its path, query and JSON body for text the ledger cannot store (see telemetry_service/text.py),
whatever the field's type (a config's nested values, a key of tags), and answers 422 naming each place. Errors are
answered in JSON that can always be encoded, and an unexpected error ends in a 500 for its own request only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from telemetry_service.api.auth import ASGIApp, Message, Receive, Scope, Send
from telemetry_service.runs import RunError
from telemetry_service.text import find_unstorable, may_hold_unstorable, printable, unstorable

log = logging.getLogger(__name__)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def error(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": printable(detail)})


async def _text_errors(request: Request) -> list[dict[str, Any]]:
    errors = []
    for where, params in (("path", request.path_params.items()), ("query", request.query_params.multi_items())):
        for name, value in params:
            problem = unstorable(name) or (unstorable(value) if isinstance(value, str) else None)
            if problem is not None:
                errors.append({"loc": [where, printable(name)], "msg": f"text {problem}", "type": "text_unstorable"})
    body = await request.body()
    if body and may_hold_unstorable(body):
        try:
            decoded = await request.json()
        except Exception:  # not JSON: the route's own parsing answers for it
            return errors
        errors += [{"loc": ["body", *path], "msg": f"text {problem}", "type": "text_unstorable"}
                   for path, problem in find_unstorable(decoded)]
    return errors


class CheckedRoute(APIRoute):
    """A route that refuses unstorable text anywhere in its request before its endpoint sees it."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            errors = await _text_errors(request)
            if errors:
                raise RequestValidationError(errors)
            return await handler(request)  # the body read above is cached on the request

        return checked


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    # Say where and what, without echoing the input: it may hold NaN or megabytes that JSON cannot carry back.
    # A key in `loc` is the client's text, so it is made printable too.
    errors = [{"loc": [printable(p) if isinstance(p, str) else p for p in e.get("loc", ())],
               "msg": printable(str(e.get("msg", ""))), "type": e.get("type", "")} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


async def _run_error(_: Request, exc: RunError) -> JSONResponse:
    return error(exc.status, exc.detail)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(RunError, _run_error)  # type: ignore[arg-type]


class ContainErrors:
    """Answers an unexpected error with a 500 and keeps the connection: Starlette re-raises to the server, which
    then closes the connection and resets the client's next request on it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            if started:  # half an answer is out: only closing the connection can tell the client
                raise
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            await error(500, "internal error; the daemon's log has the details")(scope, receive, send)
