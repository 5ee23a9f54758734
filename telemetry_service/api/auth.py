"""Who may talk to the daemon: loopback-only by default, a bearer token for anything wider.

Without a token the daemon listens on loopback addresses only, where every local user may read and write (as
with any local service). A token is required to listen anywhere else; once a token is set, every request for
data carries `Authorization: Bearer <token>`: writes always, reads (the API, /metrics, /healthz) unless
`--public-read`. The dashboard page, its static files and the API description (/docs, /openapi.json) hold no
measurements and stay open, so the dashboard can load and ask for the token; /healthz answers a bare
`{"status": "ok"}` without the token (liveness probes: container health checks, job prologs) and its details
with it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIN_TOKEN_CHARS = 16
READ_METHODS = frozenset({"GET", "HEAD"})
# Paths that carry no measurements: the dashboard shell and the API's description.
OPEN_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/favicon.ico"})
OPEN_PREFIXES = ("/static/", "/docs-static/")
LIVENESS_PATH = "/healthz"


class AccessError(ValueError):
    """The access settings cannot be used as given; the message says what to change (and never holds a secret)."""


def is_loopback(host: str) -> bool:
    """Whether every address `host` stands for is a loopback address (127.0.0.0/8, ::1)."""
    literal = host.strip("[]").split("%", 1)[0]
    try:
        addrs = [ipaddress.ip_address(literal)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        addrs = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addrs:
        return False
    for addr in addrs:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if not addr.is_loopback:
            return False
    return True


def _check_token(token: str, origin: str) -> str:
    if len(token) < MIN_TOKEN_CHARS:
        raise AccessError(f"the token from {origin} is {len(token)} characters long; use at least {MIN_TOKEN_CHARS} "
                          "(e.g. `openssl rand -hex 32`)")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise AccessError(f"the token from {origin} must be printable ASCII without spaces (it travels in a header)")
    return token


def read_token_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token file %s can be read by other users; chmod 600 it", path)
    token = text.strip()
    if not token:
        raise AccessError(f"the token file {path} is empty")
    return _check_token(token, str(path))


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token from `--token` / TELEMETRY_TOKEN or from `--token-file` / TELEMETRY_TOKEN_FILE (not both)."""
    if token is not None and token_file is not None:
        raise AccessError("give a token or a token file, not both")
    if token_file is not None:
        return read_token_file(token_file)
    if token is not None:
        return _check_token(token, "--token/TELEMETRY_TOKEN")
    return None


def check_binding(host: str, token: str | None) -> None:
    """Refuses a non-loopback address without a token: anyone who can reach it could write to the ledger."""
    if token is None and not is_loopback(host):
        raise AccessError(
            f"refusing to listen on {host}: it is not a loopback address, and without a token anyone who can reach "
            "it could read and write this node's ledger. Give a token (--token-file FILE, or TELEMETRY_TOKEN in "
            "the environment, or --token) or listen on 127.0.0.1.")


def needs_token(method: str, path: str, public_read: bool) -> bool:
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return False
    if method == "OPTIONS":  # CORS preflight carries no credentials; the real request that follows does
        return False
    return not (public_read and method in READ_METHODS)


def bearer(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The credentials of an `Authorization: Bearer ...` header, as sent."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            return credentials.strip() if scheme.lower() == b"bearer" else None
    return None


class TokenAuth:
    """ASGI middleware: answers 401 to a request that needs the token and lacks it (constant-time comparison)."""

    def __init__(self, app: ASGIApp, token: str, public_read: bool = False) -> None:
        self.app = app
        self._token = token.encode("ascii")
        self.public_read = public_read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_token(scope["method"], scope["path"], self.public_read):
            await self.app(scope, receive, send)
            return
        given = bearer(scope.get("headers", []))
        if given is not None and hmac.compare_digest(given, self._token):
            await self.app(scope, receive, send)
            return
        if scope["path"] == LIVENESS_PATH and scope["method"] in READ_METHODS:
            scope.setdefault("state", {})["authenticated"] = False  # the endpoint answers liveness only
            await self.app(scope, receive, send)
            return
        detail = ("this daemon requires a token: send 'Authorization: Bearer <token>'" if given is None
                  else "wrong token")
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="joulemeter"')]})
        await send({"type": "http.response.body", "body": body})

