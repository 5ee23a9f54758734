"""TelemetryClient: registers a training run with the node's daemon and marks its phases.

    with TelemetryClient(name="bert-to-distilbert", config=hparams) as tc:
        for step, batch in enumerate(loader):
            with tc.phase("teacher_forward", step=step):
                ...

Recording costs the training thread a timestamp and a deque append; a sender thread does the HTTP. When the
daemon is away, training goes on: markers wait, then go to a spool file that is replayed later.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
import weakref
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from trainer.client.buffer import Recorder
from trainer.client.channel import RunChannel
from trainer.client.environment import daemon_url, default_spool_dir, discover
from trainer.client.payload import MAX_NAME, jsonable, redact, registration_body, scalar_map, text
from trainer.client.sender import Flush, Sender, SenderStats, StopRequest
from trainer.client.spool import SpoolWriter
from trainer.client.transport import STOP_TIMEOUT_S, Rejected, Transport, Unreachable

log = logging.getLogger("trainer.client")

RUN_ID = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,255}$")
STATUSES = ("completed", "failed")
# How much longer than its deadline a flush waits for a sender caught in an HTTP request.
REQUEST_GRACE_S = 6.0

_live: weakref.WeakSet[TelemetryClient] = weakref.WeakSet()


def _forget_in_child() -> None:
    """A forked child (a DataLoader worker) inherits the clients but not their sender: it must not stop their runs."""
    for client in list(_live):
        client._detach()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class TelemetryClient(Recorder):
    def __init__(self, name: str, run_id: str | None = None, config: Any = None, url: str | None = None,
                 tags: dict[str, Any] | None = None, sync_cuda: bool = True, spool_dir: str | Path | None = None,
                 flush_interval: float = 0.5, max_batch: int = 1000, *, spool_after: float = 10.0,
                 register_timeout: float = 2.0, stop_timeout: float = 10.0, replay_spool: bool = True,
                 handle_sigterm: bool = True) -> None:
        """
        name: what the run is (shown in the dashboard). run_id: shared by every rank and node of one job; default
        TELEMETRY_RUN_ID, else the Slurm job (`<array job>_<task>` for array tasks) or torchrun id, else a fresh one. config: the run's
        hyper-parameters (any JSON-like object, dataclass or HF TrainingArguments). url: the daemon (default
        TELEMETRY_URL, else http://127.0.0.1:8765). tags: extra run tags, beside the Slurm ones found.
        sync_cuda: synchronise the GPU before each timestamp when the program uses CUDA. spool_dir: where markers
        that cannot be sent wait (default TELEMETRY_SPOOL_DIR, else ~/.local/share/joulemeter/spool).
        flush_interval, max_batch: a batch leaves every flush_interval seconds, or as soon as max_batch markers
        wait. spool_after: seconds a batch may wait for the daemon before it is spooled. register_timeout: how
        long start() waits for the first answer. stop_timeout: how long stop() waits for a daemon that answered
        before (one that never answered gets one more try). replay_spool: replay spool files left by earlier
        clients on this host once the daemon answers. handle_sigterm: turn SIGTERM (Slurm's scancel and time
        limit) into SystemExit, so the run is stopped as failed and its markers flushed.
        """
        super().__init__(sync_cuda=sync_cuda, max_batch=max_batch)
        # A job script that names the run (the Slurm template does) is as explicit as the argument.
        run_id = run_id or os.environ.get("TELEMETRY_RUN_ID") or None
        if run_id is not None and not RUN_ID.match(run_id):
            raise ValueError(f"run_id {run_id!r}: use 1 to 255 letters, digits and _ . : @ + -")
        if flush_interval <= 0 or spool_after < 0:
            raise ValueError("flush_interval must be positive and spool_after not negative")
        self.name = text(str(name).strip())[:MAX_NAME] or "run"
        self.url = daemon_url(url)
        self.spool_dir = Path(spool_dir).expanduser() if spool_dir is not None else default_spool_dir()
        self.process = discover()
        env_id = self.process.job_run_id if self.process.job_run_id and RUN_ID.match(self.process.job_run_id) else None
        self._derive_id = run_id is None and env_id is not None
        self._run_id = run_id or env_id or uuid.uuid4().hex
        config_json = jsonable(config) if config is not None else {}
        self.config = redact(config_json if isinstance(config_json, dict) else {"config": config_json})
        self.tags = {**self.process.tags, **scalar_map(tags, 256)}
        self.started_at: float | None = None
        self.status: str | None = None
        self._flush_interval = flush_interval
        self._spool_after = spool_after
        self._register_timeout = register_timeout
        self._stop_timeout = stop_timeout
        self._replay_spool = replay_spool
        self._handle_sigterm = handle_sigterm
        self._sender: Sender | None = None
        self._channel: RunChannel | None = None
        self._previous_sigterm: Any = None
        self._state = "new"  # new -> running -> stopped (or detached in a forked child)
        self._state_lock = threading.Lock()
        self._last_stop_sent = False

    # --- identity and state ---------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """The run's id: the caller's, the job's (`<job>.<n>` when earlier runs of the job ended), or a fresh one."""
        return self._channel.run_id if self._channel is not None else self._run_id

    @property
    def connected(self) -> bool:
        """Whether the daemon answered the last request."""
        return bool(self._sender is not None and self._sender.connected)

    @property
    def spool_path(self) -> Path | None:
        return self._sender._spool.path if self._sender is not None else None

    @property
    def stats(self) -> SenderStats:
        return self._sender.stats if self._sender is not None else SenderStats()

    def registration(self) -> dict[str, Any]:
        """The POST /api/v1/runs body this client sends (and spools, so a replay can register the run)."""
        p = self.process
        return registration_body({"name": self.name, "run_id": self.run_id, "pid": p.pid, "host": p.host,
                                  "visible_devices": p.visible_devices, "cuda_device_order": p.cuda_device_order,
                                  "started_at": self.started_at, "tags": self.tags, "config": self.config})

    # --- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> TelemetryClient:
        """Registers the run (in the background; waits up to register_timeout for the daemon's first answer)."""
        with self._state_lock:
            if self._state != "new":
                return self
            self._state = "running"
        # Markers recorded before start() belong to the run too.
        earliest = min((m[1] for m in list(self.queue) if type(m) is tuple), default=time.time())
        self.started_at = min(time.time(), earliest)
        self.process = discover()  # again: the program may have initialised CUDA since (then GPU UUIDs are known)
        self._channel = RunChannel(Transport(self.url), self.registration(), derive_id=self._derive_id)
        spool = SpoolWriter(self.spool_dir, self._run_id, self.process.host, self.process.pid)
        self._sender = Sender(self, self._channel, spool, flush_interval=self._flush_interval,
                              spool_after=self._spool_after, replay_dir=self.spool_dir if self._replay_spool else None)
        self._sender.start()
        _live.add(self)
        atexit.register(self._at_exit)
        self._install_sigterm()
        self._sender.first_attempt.wait(self._register_timeout)
        return self

    def __enter__(self) -> TelemetryClient:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        clean = exc_type is None or (isinstance(exc, SystemExit) and exc.code in (0, None))
        self.stop(status="completed" if clean else "failed")

    def stop(self, status: str = "completed", metrics: dict[str, Any] | None = None,
             timeout: float | None = None) -> bool:
        """Ends the run with its status and the job's own metrics (accuracy, F1, ...). Waits for every marker to be
        sent (True), or spooled (False): up to `timeout` (default stop_timeout) for a daemon that answered before,
        one try for one that never did. False too when the daemon refused a marker or one was dropped (see
        `stats`). Later calls do nothing and return the first call's answer."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        with self._state_lock:
            if self._state != "running":
                return self._last_stop_sent
            self._state = "stopped"
        assert self._sender is not None
        end = self._instant()
        self.status = status
        request = StopRequest(self._stop_timeout if timeout is None else timeout, status, end,
                              scalar_map(metrics, 256))
        self.queue.append(request)
        self.wake.set()
        request.done.wait(request.timeout + STOP_TIMEOUT_S + REQUEST_GRACE_S)
        self._sender.join(REQUEST_GRACE_S)
        self._retire_queue()  # the run has ended: later markers have nowhere to go
        self._last_stop_sent = request.all_sent
        self._report_refusals()
        self._uninstall_sigterm()
        atexit.unregister(self._at_exit)
        _live.discard(self)
        return request.all_sent

    def _report_refusals(self) -> None:
        stats = self.stats
        if stats.refused or stats.unnamed or stats.lost:
            log.error("joulemeter: run %s is incomplete: %d marker(s) refused by the daemon (last reason: %s), "
                      "%d dropped unnamed, %d lost", self.run_id, stats.refused, stats.refused_reason,
                      stats.unnamed, stats.lost)

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until every marker recorded so far is sent (True) or, past `timeout`, spooled (False)."""
        if self._state != "running":
            return self._last_stop_sent if self._state == "stopped" else False
        request = Flush(timeout)
        self.queue.append(request)
        self.wake.set()
        return request.done.wait(timeout + REQUEST_GRACE_S) and request.all_sent

    def energy(self) -> dict[str, Any] | None:
        """The daemon's energy report for this run (GET /api/v1/runs/{id}/energy); None if it cannot be had."""
        if self._state == "running":
            self.flush()
        try:
            with Transport(self.url) as transport:
                return transport.energy(self.run_id)
        except (Unreachable, Rejected) as exc:
            log.warning("joulemeter: no energy report for run %s from %s: %s", self.run_id, self.url, exc)
            return None

    def run_share_energy(self) -> dict[str, Any] | None:
        """This run's own share of the energy (`run_share` of the daemon's report: its processes' share of the
        node's active CPU energy by CPU time, plus its GPUs); None if the report or the share cannot be had."""
        report = self.energy()
        return None if report is None else report.get("run_share")

    # --- process ends -----------------------------------------------------------------------------------------
    def _at_exit(self) -> None:
        """A program that never stopped its run: stop it, as failed if an uncaught exception is ending it."""
        self.stop(status="failed" if getattr(sys, "last_type", None) is not None else "completed")

    def _install_sigterm(self) -> None:
        if not self._handle_sigterm or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)

    def _uninstall_sigterm(self) -> None:
        if self._previous_sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is _sigterm_to_exit:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None

    def _detach(self) -> None:
        self._state = "detached"
        self._retire_queue()  # markers recorded in the child go nowhere
        atexit.unregister(self._at_exit)


def _sigterm_to_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
