"""A throwaway PostgreSQL server for tests: initdb in a temp folder, started on a free loopback port.

Uses the server binaries of Debian's `postgresql` package (/usr/lib/postgresql/<version>/bin), PG_BINDIR, or
`initdb` on PATH. initdb refuses to run as root, so as root the server runs as the `postgres` user that the
package creates. JOULEMETER_TEST_PG_URL (a `postgresql+psycopg://` URL of a superuser) uses a running server
instead. Without either, the tests fail and say what to install: they never skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL, make_url

from tests.daemon_proc import free_port

MISSING = ("PostgreSQL server binaries not found (looked at PG_BINDIR, PATH and /usr/lib/postgresql/*/bin). "
           "Install them (Debian: apt-get install postgresql) or set JOULEMETER_TEST_PG_URL to a server's "
           "superuser URL.")


def find_bindir() -> Path | None:
    candidates = [os.environ.get("PG_BINDIR", "")]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                      if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += versions
    for c in candidates:
        if c and all((Path(c) / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    return None


class PostgresServer:
    """A superuser URL to one server; `database()` hands out a fresh, empty database per test."""

    def __init__(self, url: URL) -> None:
        self.url = url

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(host=self.url.host, port=self.url.port, user=self.url.username,
                               password=self.url.password, dbname=self.url.database or "postgres", autocommit=True)

    def database(self, prefix: str = "jm") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, db_url: str) -> None:
        name = make_url(db_url).database
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix and owner ids under which the server runs: ourselves, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root, and initdb refuses root; no `postgres` user to run the test server as "
                           "(Debian's postgresql package creates it)") from None
    runuser = shutil.which("runuser") or shutil.which("setpriv")
    if runuser is None:
        raise RuntimeError("running as root: need runuser (util-linux) to start PostgreSQL as `postgres`")
    if Path(runuser).name == "runuser":
        return [runuser, "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid
    return [runuser, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"], pw.pw_uid, pw.pw_gid


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    external = os.environ.get("JOULEMETER_TEST_PG_URL")
    if external:
        yield PostgresServer(make_url(external))
        return
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(MISSING)
    prefix, uid, gid = _as_postgres_user()
    # Not under pytest's tmp_path: that folder is private to the test user, and the server may run as another.
    root = Path(tempfile.mkdtemp(prefix="joulemeter-pg-"))
    if uid is not None:
        os.chown(root, uid, gid)
    data, port = root / "data", free_port()
    log = root / "server.log"

    def run(*cmd: str) -> None:
        # cwd: the server's user may not be allowed into ours (a checkout under /root, say), and initdb minds.
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120, cwd=root)
        if done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{server_log}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        # fsync off: a test server that loses its data on a crash costs nothing, and saves seconds.
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start")
        server = PostgresServer(URL.create("postgresql+psycopg", username="postgres", host="127.0.0.1", port=port,
                                           database="postgres"))
        deadline = time.time() + 30
        while True:  # pg_ctl -w waits for the socket; make sure TCP answers too
            try:
                server._admin().close()
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60, cwd=root)
        shutil.rmtree(root, ignore_errors=True)
