"""The sender thread: drains the recorder's queue into batches, delivers them in order, spools what cannot wait.

Order on the wire: the registration, then anything spooled earlier, then batches oldest first, then the stop.
A batch the daemon has not taken `spool_after` seconds after it was formed (or by a flush's deadline) goes to the
spool file; the spool is replayed as soon as the daemon answers again. The daemon stores a re-sent marker once,
so a batch that timed out after the daemon stored it is harmlessly sent again.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.client.buffer import Recorder
from trainer.client.channel import RunChannel
from trainer.client.payload import Scalar, marker_body
from trainer.client.replay import replay_abandoned
from trainer.client.spool import SpoolWriter
from trainer.client.transport import Rejected, Transport, Unreachable

log = logging.getLogger("trainer.client")

BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 5.0
MIN_SLEEP_S = 0.005
REPLAYER_JOIN_S = 5.0


class Flush:
    """Queued behind the markers it covers; `done` is set once they are all sent (then `all_sent`) or spooled."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.done = threading.Event()
        self.all_sent = False
        self.upto = 0
        self.deadline = 0.0


class StopRequest(Flush):
    def __init__(self, timeout: float, status: str, end: float, metrics: dict[str, Scalar]) -> None:
        super().__init__(timeout)
        self.body: dict[str, Any] = {"status": status, "end": end, "metrics": metrics}
        self.sent = False
        self.resolved = False


@dataclass
class Batch:
    seq: int
    phases: list[dict[str, Any]]
    deadline: float  # monotonic; spooled if still unsent then


@dataclass
class SenderStats:
    sent: int = 0  # markers the daemon accepted (including replayed ones)
    refused: int = 0  # markers the daemon refused (outside the run's time, malformed): never stored
    refused_reason: str | None = None  # the daemon's reason for the last refusal (a marker's, or the run's)
    spooled: int = 0  # markers written to the spool file (some may have been replayed since)
    unnamed: int = 0  # markers dropped for an empty name or a non-finite time
    lost: int = 0  # markers neither sent nor written (the spool file could not be written)


class Sender:
    def __init__(self, recorder: Recorder, channel: RunChannel, spool: SpoolWriter, *, flush_interval: float,
                 spool_after: float, replay_dir: Path | None) -> None:
        self._thread = threading.Thread(target=self._run, name="joulemeter-sender", daemon=True)
        self._recorder = recorder
        self._queue = recorder.queue  # its own reference: the recorder retires it when the run stops
        self._channel = channel
        self._spool = spool
        self._flush_interval = flush_interval
        self._spool_after = spool_after
        self._replay_dir = replay_dir
        self.url = channel.transport.url
        self.stats = SenderStats()
        self.first_attempt = threading.Event()
        self.connected: bool | None = None  # None until the first attempt
        self._ever_connected = False
        self._warned = False
        self._refused = False
        self._pending: deque[Batch] = deque()
        self._waiters: list[Flush] = []
        self._stop: StopRequest | None = None
        self._seq = 0
        self._done = 0
        self._failures = 0
        self._next_try = 0.0
        self._finished = False
        self._replayer: threading.Thread | None = None
        self._replayer_stop = threading.Event()

    @property
    def rejected(self) -> int:
        return self._channel.rejected

    # --- the loop -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        wake = self._recorder.wake
        while not self._finished:
            wake.wait(self._sleep())
            wake.clear()
            try:
                self._cycle()
            except Exception:  # a bug here must not end delivery: report it and carry on
                log.exception("joulemeter: unexpected error in the sender; retrying")
                self._backoff()
        self._shutdown()

    def _has_work(self) -> bool:
        stop = self._stop
        return (not self._channel.registered or bool(self._pending) or self._spool.has_data
                or (stop is not None and not stop.resolved))

    def _sleep(self) -> float:
        now = time.monotonic()
        wait = self._flush_interval
        if self._has_work():
            wait = min(wait, self._next_try - now)
        if self._pending:
            wait = min(wait, self._pending[0].deadline - now)
        for w in self._waiters:
            wait = min(wait, w.deadline - now)
        return max(wait, MIN_SLEEP_S)

    def _cycle(self) -> None:
        self._drain(time.monotonic())
        if self._has_work() and time.monotonic() >= self._next_try:
            try:
                self._deliver()
            except Unreachable as exc:
                self._on_failure(str(exc))
            except Rejected as exc:
                self._on_refused(exc)
            else:
                self._on_success()
        now = time.monotonic()
        self._spool_overdue(now)
        self._resolve_waiters(now)

    # --- intake ---------------------------------------------------------------------------------------------
    def _drain(self, now: float) -> None:
        popleft = self._queue.popleft
        limit = self._recorder.max_batch
        current: list[dict[str, Any]] = []
        while True:
            try:
                item = popleft()
            except IndexError:
                break
            if type(item) is tuple:
                body = marker_body(item)
                if body is None:
                    self._unnamed(item)
                    continue
                current.append(body)
                if len(current) >= limit:
                    self._add_batch(current, now)
                    current = []
            elif isinstance(item, Flush):
                if current:
                    self._add_batch(current, now)
                    current = []
                self._add_waiter(item, now)
        if current:
            self._add_batch(current, now)

    def _unnamed(self, item: tuple[Any, ...]) -> None:
        self.stats.unnamed += 1
        if self.stats.unnamed == 1:
            log.warning("joulemeter: marker %r has no usable name or time; such markers are dropped", item[:3])

    def _add_batch(self, phases: list[dict[str, Any]], now: float) -> None:
        self._seq += 1
        self._pending.append(Batch(self._seq, phases, now + self._spool_after))

    def _add_waiter(self, waiter: Flush, now: float) -> None:
        waiter.upto = self._seq
        # A daemon that answered before may be restarting: wait for it. One never seen gets one more try.
        patient = self.connected is not False or self._ever_connected
        waiter.deadline = now + (waiter.timeout if patient else 0.0)
        for batch in self._pending:
            batch.deadline = min(batch.deadline, waiter.deadline)
        self._next_try = min(self._next_try, now)
        self._waiters.append(waiter)
        if isinstance(waiter, StopRequest):
            self._stop = waiter

    # --- delivery -------------------------------------------------------------------------------------------
    def _deliver(self) -> None:
        channel = self._channel
        if not channel.registered:
            self._registered(channel.register())
        if self._spool.has_data:
            contents = self._spool.read()
            refused = sum(channel.send(phases) for phases in contents.phases)
            self._spool.clear()
            self._count(contents.markers, refused)
        while self._pending:
            batch = self._pending[0]
            refused = channel.send(batch.phases)
            self._pending.popleft()
            self._done = batch.seq
            self._count(len(batch.phases), refused)
        stop = self._stop
        if stop is not None and not stop.resolved and self._done >= stop.upto:
            try:
                channel.stop(**stop.body)
                stop.sent = True
            except Rejected as exc:
                self.stats.refused_reason = exc.detail
                log.error("joulemeter: the daemon refused to stop run %s: %s", channel.run_id, exc.detail)
            stop.resolved = True

    def _count(self, markers: int, refused: int) -> None:
        self.stats.sent += markers - refused
        if refused:
            self.stats.refused += refused
            self.stats.refused_reason = self._channel.last_refusal

    @property
    def all_delivered(self) -> bool:
        """No marker was refused or dropped: what was recorded is what the daemon has (or the spool holds)."""
        s = self.stats
        return s.refused == 0 and s.unnamed == 0 and s.lost == 0

    def _registered(self, answer: dict[str, Any]) -> None:
        self._on_success()
        self.first_attempt.set()
        log.info("joulemeter: run %s registered with the daemon at %s", self._channel.run_id, self.url)
        for warning in self._channel.daemon_warnings:
            log.warning("joulemeter: daemon: %s", warning)
        if self._replay_dir is not None and self._replayer is None:
            self._replayer = threading.Thread(target=self._replay_abandoned, name="joulemeter-replay", daemon=True)
            self._replayer.start()

    def _replay_abandoned(self) -> None:
        try:
            with Transport(self.url) as transport:
                assert self._replay_dir is not None
                replay_abandoned(transport, self._replay_dir, socket.gethostname(), self.url,
                                 exclude=self._spool.path, stop_event=self._replayer_stop,
                                 max_batch=self._recorder.max_batch)
        except Exception:  # replaying old files is a courtesy; it must never disturb this run
            log.exception("joulemeter: replaying old spool files failed")

    def _on_success(self) -> None:
        if self.connected is False:
            log.info("joulemeter: the daemon at %s answers again", self.url)
        self.connected = True
        self._ever_connected = True
        self._failures = 0
        self._next_try = 0.0

    def _on_failure(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        self.first_attempt.set()
        if was is not False:
            if not self._warned:
                log.warning(
                    "joulemeter: no telemetry daemon answers at %s (%s). Training continues; the markers of run %s "
                    "wait in memory, are sent when the daemon answers, and go to the spool file %s if it stays "
                    "away (then: python -m trainer.client replay %s). Start one with: python -m telemetry_service "
                    "serve", self.url, reason, self._channel.run_id, self._spool.path, self._spool.path)
                self._warned = True
            else:
                log.warning("joulemeter: lost the daemon at %s (%s); markers wait and are retried", self.url, reason)
        self._backoff()

    def _on_refused(self, exc: Rejected) -> None:
        self.first_attempt.set()
        self.connected = True  # it answers, but will not take this run
        self.stats.refused_reason = exc.detail
        if not self._refused:
            log.error("joulemeter: the daemon at %s refuses run %s: %s; its markers go to the spool file %s",
                      self.url, self._channel.run_id, exc.detail, self._spool.path)
            self._refused = True
        self._failures = max(self._failures, 8)
        self._backoff()

    def _backoff(self) -> None:
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** min(self._failures, 16)) * random.uniform(0.5, 1.0)
        self._failures += 1
        self._next_try = time.monotonic() + delay

    # --- the spool and the waiters --------------------------------------------------------------------------
    def _spool_overdue(self, now: float) -> None:
        while self._pending and self._pending[0].deadline <= now:
            batch = self._pending.popleft()
            self._spool_write({"kind": "phases", "phases": batch.phases}, len(batch.phases))
            self._done = batch.seq
        stop = self._stop
        if stop is not None and not stop.resolved and self._done >= stop.upto and stop.deadline <= now:
            self._spool_write({"kind": "stop", "body": stop.body}, 0)
            stop.resolved = True

    def _spool_write(self, record: dict[str, Any], markers: int) -> None:
        channel = self._channel
        header = {"url": self.url, "host": socket.gethostname(), "pid": os.getpid(), "derive_id": channel.derive_id,
                  "registration": channel.registration, "written_at": time.time()}
        try:
            self._spool.append(record, header, markers)
            self.stats.spooled += markers
        except OSError as exc:
            self.stats.lost += markers
            log.error("joulemeter: cannot write the spool file %s (%s); %d marker(s) lost", self._spool.path, exc,
                      markers)

    def _resolve_waiters(self, now: float) -> None:
        registered = self._channel.registered
        remaining = []
        for w in self._waiters:
            if isinstance(w, StopRequest):
                ready, sent = w.resolved, w.sent
            else:
                ready, sent = self._done >= w.upto and (registered or now >= w.deadline), True
            if ready:
                w.all_sent = sent and registered and not self._spool.has_data and self.all_delivered
                w.done.set()
            else:
                remaining.append(w)
        self._waiters = remaining
        if self._stop is not None and self._stop.resolved:
            self._finished = True

    def _shutdown(self) -> None:
        for w in self._waiters:  # flushes asked for after the stop: nothing more will be sent
            w.done.set()
        self._replayer_stop.set()
        if self._replayer is not None:
            self._replayer.join(REPLAYER_JOIN_S)
        kept = self._spool.close()
        if kept is not None:
            log.log(logging.INFO if self._warned else logging.WARNING,
                    "joulemeter: %d marker(s) of run %s are spooled in %s; the next client started on this host "
                    "sends them, or now: python -m trainer.client replay %s", self._spool.markers,
                    self._channel.run_id, kept, kept)
        self._channel.transport.close()
