"""`python -m telemetry_service serve`: every flag can also be set as TELEMETRY_<NAME> in the environment."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import IO, NoReturn

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError

from telemetry_service import report_command
from telemetry_service.config import Settings
from telemetry_service.probe import command as probe_command
from telemetry_service.store.db import LedgerError

log = logging.getLogger("telemetry_service")


class _Parser(argparse.ArgumentParser):
    """Errors as one sentence naming the (sub)command's help, not a usage block."""

    commands: Mapping[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _parser() -> _Parser:
    parser = _Parser(prog="python -m telemetry_service",
                                     description="Node-local energy telemetry daemon for ML training.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="sample this node's sensors and serve the REST API")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; env TELEMETRY_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8765; env TELEMETRY_PORT)")
    serve.add_argument("--db", help="SQLAlchemy URL of the ledger (default: SQLite in the per-user data folder; "
                                    "env TELEMETRY_DB)")
    serve.add_argument("--interval", type=float, help="sampling interval in seconds (default 0.1)")
    serve.add_argument("--node", help="this node's name in the ledger (default: the hostname)")
    serve.add_argument("--simulate-gpus", type=int, metavar="N",
                       help="add N simulated GPUs (demos without a GPU; labelled 'simulated' everywhere)")
    serve.add_argument("--simulate-trace", type=Path, metavar="FILE",
                       help="JSON description of simulated GPUs and the power traces they play, or a recording "
                            "to replay")
    serve.add_argument("--simulate-profile", metavar="NAME",
                       help="how simulated GPUs' sensors behave (e.g. jitter-100ms, part-time-100ms; default "
                            "ideal-100ms; the list is in telemetry_service/sensors/simulated/profiles.py)")
    serve.add_argument("--cpu-tdp-w", type=float, help="CPU TDP for the estimate used where RAPL is unreadable")
    serve.add_argument("--cpu-idle-fraction", type=float, metavar="F",
                       help="idle power of that estimate as a fraction of the TDP (default 0.3)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--token", help="bearer token clients must send; required to listen on a non-loopback "
                                       "address (visible in the process list: prefer TELEMETRY_TOKEN or --token-file)")
    serve.add_argument("--token-file", type=Path, metavar="FILE", help="read the token from FILE (env TELEMETRY_TOKEN_FILE)")
    serve.add_argument("--public-read", action="store_const", const=True,
                       help="with a token, let reads (API GETs, /metrics, /healthz) through without it")
    serve.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                       help="allow browser pages from ORIGIN to call the API (repeatable; env TELEMETRY_CORS_ORIGIN, "
                            "comma-separated); off by default")
    serve.add_argument("--retention", metavar="SPEC",
                       help="downsample old samples: AGE:BUCKET pairs (default '1d:1s,7d:1m,90d:15m'), or 'off'")
    serve.add_argument("--carbon-intensity", type=float, metavar="G",
                       help="grid carbon intensity in gCO2e/kWh: adds gCO2e beside every energy figure")
    serve.add_argument("--carbon-intensity-file", type=Path, metavar="FILE",
                       help="the node's grid carbon intensity over time, CSV rows unix_time,gco2e_per_kwh (each "
                            "holds until the next)")
    migrate = sub.add_parser("migrate", help="bring the ledger's schema to this version and exit (serve does this "
                                             "too as it starts; on a shared ledger, run it once before restarting "
                                             "the daemons)")
    migrate.add_argument("--db", help="SQLAlchemy URL of the ledger (default as for serve; env TELEMETRY_DB)")
    probe_command.add_parsers(sub)
    report_command.add_parsers(sub)
    parser.commands = sub.choices
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse blames the top level; the flags to point at are the subcommand's
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def invalid_setting(exc: ValidationError) -> str:
    """A settings error as one sentence naming the flag: pydantic's own text is a block with a web link."""
    parts = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["loc"]:
            field = str(err["loc"][0])
            name = f"--{field.replace('_', '-')}/TELEMETRY_{field.upper()}"
            parts.append(f"{name} {err['input']!r}: {msg[:1].lower()}{msg[1:]}")
        else:
            parts.append(msg[:1].lower() + msg[1:])
    return "invalid setting: " + "; ".join(parts)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    return Settings(**overrides)


def _bind(host: str, port: int) -> socket.socket:
    """Binds before anything else starts, so a second daemon on the same port says so and touches nothing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only on sockets that name it, and without it every
    # response after the first on a kept-alive connection waits ~40 ms (Nagle against delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"error: cannot listen on {host}:{port}: {exc.strerror} (is another daemon running?)") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _ledger_lock(db_url: str) -> Iterator[None]:
    """One daemon per SQLite ledger: a second one exits instead of writing beside the first."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    path = Path(url.database).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.resolve()  # one lock per ledger file, however it is named (a symlink, a relative path)
    handle: IO[str] = open(f"{path}.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SystemExit(f"error: the ledger {path} is in use by another daemon (pid {holder})")
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def _exit_cleanly_on_signals(serving: list[bool]) -> None:
    """SIGTERM and SIGINT end the daemon with status 0 once everything is written.

    uvicorn catches them while serving, shuts down (the lifespan writes every sample), then raises the signal
    again; by then there is nothing left to do. One that comes before serving stops the start-up.
    """
    def handler(signum: int, _frame: object) -> None:
        if not serving[0]:
            raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def serve(settings: Settings) -> int:
    from telemetry_service.api.app import create_app
    from telemetry_service.api.auth import AccessError, check_binding, resolve_token
    from telemetry_service.daemon import Daemon
    from telemetry_service.retention import Retention, parse_tiers

    try:
        token = resolve_token(settings.token.get_secret_value() if settings.token else None, settings.token_file)
        check_binding(settings.host, token)
        tiers = parse_tiers(settings.retention)
    except (AccessError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serving = [False]
    _exit_cleanly_on_signals(serving)
    sock = _bind(settings.host, settings.port)
    with _ledger_lock(settings.db):
        try:
            daemon = Daemon(settings)
        except LedgerError as exc:
            sock.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except DatabaseError as exc:  # e.g. another program holds the ledger's write lock
            sock.close()
            print(f"error: cannot write to the ledger {make_url(settings.db).render_as_string(hide_password=True)}: "
                  f"{exc.orig}", file=sys.stderr)
            return 2
        app = create_app(daemon, token=token)
        retention = Retention(daemon.writer, daemon.sessions, daemon.node_id,
                              [state.device_id for state in daemon.sampler.devices.values()], tiers,
                              settings.interval, settings.retention_every_s)

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            daemon.start()
            retention.start()
            serving[0] = True
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            log.info("listening on http://%s:%d (dashboard at /, API docs at /docs)", shown, port)
            log.info("access: %s", "no token (loopback only)" if token is None else
                     "token required for writes" + ("" if settings.public_read else " and reads"))
            yield
            retention.close()
            daemon.close()  # SIGTERM and SIGINT land here: every sample read so far is written first
            log.info("stopped; ledger flushed")

        app.router.lifespan_context = lifespan
        config = uvicorn.Config(app, log_level=settings.log_level, access_log=False, timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def migrate(settings: Settings) -> int:
    from telemetry_service.store.db import open_ledger
    from telemetry_service.store.migrate import current_revision

    with _ledger_lock(settings.db):
        try:
            engine, _ = open_ledger(settings.db)
        except LedgerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with engine.connect() as conn:
            revision = current_revision(conn)
        print(f"{engine.url.render_as_string(hide_password=True)}: schema revision {revision}")
        engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.command in ("probe", "probe-report"):  # no daemon settings: they would be read and ignored
        return probe_command.main(args)
    if args.command in ("report", "export"):  # readers of a daemon or ledger: no daemon settings either
        return report_command.main(args)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"error: {invalid_setting(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        return migrate(settings)
    return 2
