"""Members whose process died without stopping (killed, OOM, a lost node's ranks): found by PID on this node.

A member's process is gone when its PID no longer exists, is a zombie, or belongs to a process started after the
member registered (the PID was reused). Only members whose process the daemon saw at registration are checked:
a client in another PID namespace (a container) would otherwise look dead from the start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psutil
from sqlalchemy import select
from sqlalchemy.orm import Session

from telemetry_service.runs import end_lost_members
from telemetry_service.store.models import RunMember
from telemetry_service.store.writer import Writer

log = logging.getLogger(__name__)

# A process created this long after its member registered is another process with a reused PID.
CREATE_SLACK_S = 2.0


def pid_alive(pid: int, since: float) -> bool:
    """Whether process `pid` runs and already ran at `since` (unix seconds)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= since + CREATE_SLACK_S
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False


def dead_members(session: Session, node_id: int) -> list[int]:
    rows = session.execute(select(RunMember.id, RunMember.pid, RunMember.joined_at).where(
        RunMember.node_id == node_id, RunMember.status == "running", RunMember.pid_visible,
        RunMember.pid.is_not(None))).all()
    return [r.id for r in rows if not pid_alive(r.pid, r.joined_at)]


class MemberWatch:
    """Every `every_s`, ends this node's members whose process is gone; `on_change` runs after any did."""

    def __init__(self, sessions: Callable[[], Session], writer: Writer, node_id: int, every_s: float,
                 on_change: Callable[[], None]) -> None:
        self._sessions = sessions
        self._writer = writer
        self._node_id = node_id
        self._every_s = every_s
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="member-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> list[str]:
        """One pass; returns the runs whose members were ended."""
        with self._sessions() as session:
            dead = dead_members(session, self._node_id)
        if not dead:
            return []
        runs = self._writer.submit(lambda session: end_lost_members(session, dead)).result(timeout=60.0)
        log.warning("process(es) of run(s) %s ended without stopping them: their members are ended as lost",
                    ", ".join(runs))
        self._on_change()
        return runs

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.check()
            except Exception:  # a failed pass is retried at the next one
                log.exception("cannot check the processes of running runs")
