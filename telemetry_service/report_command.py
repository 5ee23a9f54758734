"""`report` and `export`: a run's energy, phases and samples, read from the daemon over HTTP or from a ledger."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

DEFAULT_PORT = 8765
PAGE = 100_000  # the API's largest page of phases or sample points


class SourceError(Exception):
    """The run cannot be read; the message is one plain sentence."""


class Source(Protocol):
    def energy(self, run_id: str) -> dict[str, Any]: ...

    def phases(self, run_id: str) -> list[dict[str, Any]]: ...

    def samples(self, run_id: str, device: str) -> dict[str, Any]: ...


def default_url() -> str:
    return os.environ.get("TELEMETRY_URL") or f"http://127.0.0.1:{os.environ.get('TELEMETRY_PORT') or DEFAULT_PORT}"


def _token() -> str | None:
    """The bearer token as the client finds it: TELEMETRY_TOKEN, else the file TELEMETRY_TOKEN_FILE names."""
    from telemetry_service.api.auth import AccessError, resolve_token

    file = os.environ.get("TELEMETRY_TOKEN_FILE")
    try:
        return resolve_token(os.environ.get("TELEMETRY_TOKEN") or None, Path(file) if file else None)
    except (AccessError, OSError) as exc:
        raise SourceError(f"cannot use the daemon's token: {exc}") from exc


class HttpSource:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        token = _token()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        try:
            r = httpx.get(f"{self.url}{path}", params=params, headers=self.headers, timeout=120.0)
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach the daemon at {self.url} ({exc}); is it running? (--url or "
                              "TELEMETRY_URL name another)") from exc
        if r.status_code != 200:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise SourceError(f"the daemon at {self.url} answered {r.status_code}: {detail}")
        return r.json()

    def energy(self, run_id: str) -> dict[str, Any]:
        return self._get(f"/api/v1/runs/{run_id}/energy")

    def phases(self, run_id: str) -> list[dict[str, Any]]:
        page = self._get(f"/api/v1/runs/{run_id}/phases", limit=PAGE)
        if page.get("truncated"):
            print(f"warning: only the first {PAGE} phase intervals were read; nesting is judged from them",
                  file=sys.stderr)
        return page["phases"]

    def samples(self, run_id: str, device: str) -> dict[str, Any]:
        return self._get(f"/api/v1/runs/{run_id}/samples", device=device, max_points=PAGE)


class LedgerSource:
    """Reads a ledger directly (no daemon needed), applying the same energy math the daemon does."""

    def __init__(self, db: str) -> None:
        from telemetry_service.store.db import LedgerError, open_ledger

        try:
            self.engine, self.sessions = open_ledger(db)
        except LedgerError as exc:
            raise SourceError(str(exc)) from exc

    def _run(self, session: Any, run_id: str) -> Any:
        from telemetry_service.runs import RunError, get_run

        try:
            return get_run(session, run_id)
        except RunError as exc:
            raise SourceError(exc.detail) from exc

    def energy(self, run_id: str) -> dict[str, Any]:
        from telemetry_service.report import run_energy

        with self.sessions() as session:
            return run_energy(session, self._run(session, run_id))

    def phases(self, run_id: str) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from telemetry_service.store.models import Node, Phase

        with self.sessions() as session:
            run = self._run(session, run_id)
            rows = session.execute(select(Phase.name, Phase.start, Phase.end, Phase.step, Phase.attrs, Node.name)
                                   .join(Node).where(Phase.run_pk == run.id).order_by(Phase.start)).all()
        return [{"name": r[0], "start": r[1], "end": r[2], "step": r[3], "attrs": r[4], "node": r[5]} for r in rows]

    def samples(self, run_id: str, device: str) -> dict[str, Any]:
        from sqlalchemy import select

        from telemetry_service.report import run_span
        from telemetry_service.series import device_series
        from telemetry_service.store.models import Device, Node

        node, _, key = device.rpartition("/")
        with self.sessions() as session:
            t0, t1 = run_span(self._run(session, run_id))
            dev = session.execute(select(Device).join(Node).where(Node.name == node, Device.key == key)).scalar()
            if dev is None:
                raise SourceError(f"no device {device!r} in the ledger")
            columns, _ = device_series(session, dev.id, t0, t1, PAGE)
        return {"device": device, "kind": dev.kind, "source": dev.source, **columns}


def add_parsers(sub: Any) -> None:
    for name, text in (("report", "print a run's energy by phase as a table"),
                       ("export", "write a run's samples, phases or energy per phase as CSV or JSON lines")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("run", metavar="RUN", help="the run's id")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--url", help="the daemon to ask (default TELEMETRY_URL, else http://127.0.0.1:8765)")
        where.add_argument("--db", help="read this ledger (SQLAlchemy URL) directly instead of asking a daemon")
    export = sub.choices["export"]
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="default csv")
    export.add_argument("--what", choices=["samples", "phases", "energy"], default="energy",
                        help="samples (every device's), phases (every interval) or energy (one row per phase; default)")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here instead of standard output")


def source_for(args: argparse.Namespace) -> Source:
    return LedgerSource(args.db) if args.db else HttpSource(args.url or default_url())


def main(args: argparse.Namespace) -> int:
    try:
        source = source_for(args)
        if args.command == "report":
            from rich.console import Console

            from telemetry_service.report_table import print_report

            print_report(source.energy(args.run), source.phases(args.run), Console())
            return 0
        return _export(source, args)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _export(source: Source, args: argparse.Namespace) -> int:
    from telemetry_service import export

    columns: Sequence[str]
    if args.what == "energy":
        rows, columns = export.energy_rows(source.energy(args.run)), export.ENERGY_COLUMNS
    elif args.what == "phases":
        rows, columns = export.phase_rows(source.phases(args.run)), export.PHASE_COLUMNS
    else:
        devices = [d["id"] for d in source.energy(args.run)["devices"]]
        rows = [r for d in devices for r in export.sample_rows(source.samples(args.run, d))]
        columns = export.SAMPLE_COLUMNS
    if args.out is None:
        export.write_rows(rows, args.format, sys.stdout, columns)
    else:
        with open(args.out, "w", newline="") as fh:
            export.write_rows(rows, args.format, fh, columns)
    return 0
