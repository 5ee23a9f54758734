"""One run's traffic to a daemon: registration first, then phase batches, then the stop.

Both the live sender and a spool replay speak through this, so a re-sent batch, a run the daemon has not seen
(404) and a batch it refuses (413/422) are handled the same way everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

from trainer.client.payload import Scalar, registration_body
from trainer.client.transport import Rejected, Transport, UnknownRun

log = logging.getLogger("trainer.client")

# Rejected markers are reported one by one up to this many per run, then counted.
REPORTED_REJECTIONS = 3
# `<job id>.<n>` is tried for n = 2 .. this when earlier runs of the same Slurm job have ended.
MAX_RUN_SUFFIX = 1000


class RunChannel:
    def __init__(self, transport: Transport, registration: dict[str, Any], derive_id: bool = False) -> None:
        """`registration` is the POST /api/v1/runs body, with `run_id` and `started_at` set.

        With `derive_id`, the run_id came from the job's environment rather than the caller: a run of that id
        that ended before this one started belongs to an earlier program of the same job (an sbatch script
        running two trainings), so this run takes the next free `<job id>.<n>` instead of joining it.
        """
        self.transport = transport
        self.registration = registration_body(registration)
        self.derive_id = derive_id
        self.registered = False
        self.daemon_warnings: list[str] = []
        self.rejected = 0
        self.last_refusal: str | None = None  # the daemon's reason for the last marker it refused

    @property
    def run_id(self) -> str:
        return str(self.registration["run_id"])

    @property
    def pid(self) -> int | None:
        pid = self.registration.get("pid")
        return pid if isinstance(pid, int) else None

    def register(self) -> dict[str, Any]:
        if self.derive_id:
            self.registration["run_id"] = self._free_run_id()
        answer = self.transport.register(self.registration)
        self.registration["run_id"] = answer.get("id", self.run_id)
        self.derive_id = False  # the id is settled; a later 404 (fresh ledger) re-registers this same id
        self.registered = True
        self.daemon_warnings = [str(w) for w in answer.get("warnings", [])]
        return answer

    def _free_run_id(self) -> str:
        base, started = self.run_id, float(self.registration["started_at"])
        for n in range(1, MAX_RUN_SUFFIX + 1):
            candidate = base if n == 1 else f"{base}.{n}"
            try:
                run = self.transport.get_run(candidate)
            except UnknownRun:
                return candidate
            ended = run.get("ended_at")
            if ended is None or ended >= started:  # running, or ended after we began: ours to join
                return candidate
        raise Rejected(409, f"runs {base} to {base}.{MAX_RUN_SUFFIX} all ended before this one started")

    def send(self, phases: list[dict[str, Any]]) -> int:
        """Delivers a batch; returns how many markers the daemon refused (counted in `rejected`, the reason in
        `last_refusal`). Raises Unreachable if the daemon cannot take it now (the caller retries)."""
        if not phases:
            return 0
        try:
            self._post(phases)
        except Rejected as exc:
            if len(phases) > 1:  # isolate the offending marker(s) and deliver the rest
                mid = len(phases) // 2
                return self.send(phases[:mid]) + self.send(phases[mid:])
            self.rejected += 1
            self.last_refusal = exc.detail
            if self.rejected <= REPORTED_REJECTIONS:
                log.warning("joulemeter: the daemon refused marker %r of run %s: %s", phases[0].get("name"),
                            self.run_id, exc.detail)
            return 1
        return 0

    def _post(self, phases: list[dict[str, Any]]) -> None:
        try:
            self.transport.post_phases(self.run_id, phases, self.pid)
        except UnknownRun:
            self.registered = False
            self.register()
            self.transport.post_phases(self.run_id, phases, self.pid)

    def stop(self, status: str, end: float, metrics: dict[str, Scalar]) -> dict[str, Any]:
        try:
            return self.transport.stop(self.run_id, status, end, metrics, self.pid)
        except UnknownRun:
            self.registered = False
            self.register()
            return self.transport.stop(self.run_id, status, end, metrics, self.pid)
