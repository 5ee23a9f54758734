"""`?format=csv` on a run's /energy (one row per phase), /phases and /samples.

The JSON answer is formed as usual and turned into rows here, so the CSV has the columns of
`python -m telemetry_service export` (telemetry_service/export.py) and the routes stay as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from telemetry_service import export
from telemetry_service.api.auth import ASGIApp, Message, Receive, Scope, Send

RUN_PATH = re.compile(r"^/api/v1/runs/[^/]+/(energy|phases|samples)$")
SHAPES: dict[str, tuple[Callable[[Any], list[dict[str, Any]]], Sequence[str]]] = {
    "energy": (export.energy_rows, export.ENERGY_COLUMNS),
    "phases": (lambda body: export.phase_rows(body["phases"]), export.PHASE_COLUMNS),
    "samples": (export.sample_rows, export.SAMPLE_COLUMNS),
}


class CsvFormat:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = RUN_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        fmt = [v for k, v in query if k == "format"]
        if match is None or scope.get("method") != "GET" or not fmt:
            await self.app(scope, receive, send)
            return
        if fmt != ["csv"] and fmt != ["json"]:
            await _send(send, 422, b'{"detail":"format is json or csv"}', b"application/json")
            return
        # The route does not know `format`: it sees the query without it.
        inner = {**scope, "query_string": urlencode([(k, v) for k, v in query if k != "format"]).encode()}
        if fmt == ["json"]:
            await self.app(inner, receive, send)
            return
        start: Message = {}
        body = bytearray()

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            else:
                body.extend(message.get("body", b""))

        await self.app(inner, receive, keep)
        if start.get("status") != 200:  # errors keep their JSON answer
            await send(start)
            await send({"type": "http.response.body", "body": bytes(body)})
            return
        rows, columns = SHAPES[match.group(1)]
        await _send(send, 200, export.to_text(rows(json.loads(body)), "csv", columns).encode(),
                    b"text/csv; charset=utf-8")


async def _send(send: Send, status: int, body: bytes, media: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
