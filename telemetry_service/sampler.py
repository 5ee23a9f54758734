"""The sampling loop: reads every sensor on a fixed monotonic schedule and hands batches to the ledger writer."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from telemetry_service.energy import counter_increment
from telemetry_service.sensors.base import DeviceInfo, PartialReadError, Reading, Sensor
from telemetry_service.sensors.processes import ProcessReading, ProcessWatcher
from telemetry_service.store.blocks import reopen_before
from telemetry_service.store.models import Device, Node, ProcessSample, Sample, SamplerSession
from telemetry_service.store.writer import Writer

log = logging.getLogger(__name__)


@dataclass
class DeviceState:
    """What the sampler carries from one reading of a device to the next."""

    info: DeviceInfo
    device_id: int
    energy_j: float = 0.0  # cumulative, continued across daemon restarts
    last_raw_j: float | None = None
    last_t: float | None = None
    last_power_w: float | None = None
    latest: Reading | None = None


@dataclass
class SamplerStats:
    ticks: int = 0
    missed_ticks: int = 0
    worst_gap_s: float = 0.0
    # Replaced, never changed in place: the API reads and encodes it from other threads while the sampler counts.
    sensor_errors: dict[str, int] = field(default_factory=dict)

    def count_sensor_error(self, name: str) -> int:
        count = self.sensor_errors.get(name, 0) + 1
        self.sensor_errors = {**self.sensor_errors, name: count}
        return count


def register_node(session: Session, node_name: str, devices: list[DeviceInfo], now: float) -> tuple[int, dict[str, int]]:
    """Upserts this node and its devices; devices not seen any more stay in the ledger, marked absent."""
    node = session.scalars(select(Node).where(Node.name == node_name)).one_or_none()
    if node is None:
        node = Node(name=node_name, first_seen=now, last_started=now)
        session.add(node)
        session.flush()
    node.last_started = now
    existing = {d.key: d for d in session.scalars(select(Device).where(Device.node_id == node.id))}
    ids: dict[str, int] = {}
    for info in devices:
        dev = existing.pop(info.key, None)
        if dev is None:
            dev = Device(node_id=node.id, key=info.key)
            session.add(dev)
        dev.kind, dev.index, dev.name, dev.uuid = info.kind, info.index, info.name, info.uuid
        dev.source, dev.energy_counter = info.source, info.energy_counter
        dev.update_period_s, dev.counter_wrap_j, dev.present = info.update_period_s, info.counter_wrap_j, True
        dev.power_window_s, dev.idle_power_w = info.power_window_s, info.idle_power_w
        session.flush()
        ids[info.key] = dev.id
    for gone in existing.values():
        gone.present = False
    return node.id, ids


def last_energy(session: Session, device_id: int) -> tuple[float, float | None, float] | None:
    """The cumulative energy, raw counter and time of a device's newest sample, to continue from after a restart
    (the time bounds what the counter may have gained while the daemon was away)."""
    row = session.execute(
        select(Sample.energy_j, Sample.counter_raw_j, Sample.t).where(Sample.device_id == device_id, Sample.energy_j.is_not(None))
        .order_by(Sample.t.desc()).limit(1)
    ).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


class Sampler:
    def __init__(self, sensors: list[Sensor], writer: Writer, session_factory: Any, node_name: str,
                 interval: float, flush_interval: float = 0.5, process_interval: float = 1.0) -> None:
        self.sensors = sensors
        self.writer = writer
        self.interval = interval
        self.flush_interval = flush_interval
        self.process_interval = process_interval
        self.node_name = node_name
        self.stats = SamplerStats()
        self.processes = ProcessWatcher()
        self._pids: set[int] = set()
        self._tree_sm: dict[int, dict[str, dict[int, float]]] = {}  # followed pid -> GPU -> its tree's SM-seconds
        self._pending: list[dict[str, Any]] = []
        self._pending_procs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._written_up_to = 0.0
        self._written = threading.Condition()
        self._flush_now = threading.Event()
        self._pids_changed = threading.Event()
        self._last_read: dict[str, float] = {}
        now = time.time()
        with session_factory() as session, session.begin():
            infos = [d for s in sensors for d in s.devices()]
            self.node_id, ids = register_node(session, node_name, infos, now)
            self.devices: dict[str, DeviceState] = {}
            for info in infos:
                state = DeviceState(info=info, device_id=ids[info.key])
                previous = last_energy(session, state.device_id)
                if previous is not None:
                    state.energy_j, state.last_raw_j, state.last_t = previous
                self.devices[info.key] = state
            sess = SamplerSession(node_id=self.node_id, started_at=now, interval_s=interval)
            session.add(sess)
            session.flush()
            self.session_id = sess.id
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    # --- control ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops sampling and writes everything read so far."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._flush(final=True)

    def watch_pids(self, pids: set[int]) -> None:
        with self._lock:
            self._pids = set(pids)
        self._pids_changed.set()  # read at once: a run's CPU seconds need a reading at its start and its end

    def wait_written(self, t: float, timeout: float) -> bool:
        """Blocks until samples read after `t` are in the ledger (or `timeout` passes)."""
        deadline = time.monotonic() + timeout
        with self._written:
            while self._written_up_to < t:
                self._flush_now.set()
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return self._written_up_to >= t
                self._written.wait(min(left, 0.05))
        return True

    # --- the loop -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        last_flush = start
        last_procs = start - self.process_interval
        last_tick_time: float | None = None
        while not self._stop.is_set():
            now_mono = time.monotonic()
            if last_tick_time is not None:
                self.stats.worst_gap_s = max(self.stats.worst_gap_s, now_mono - last_tick_time)
            last_tick_time = now_mono
            if self._pids_changed.is_set():
                self._last_read.clear()  # the host's busy CPU seconds too, beside the processes' first reading
            self._sample_once()
            self.stats.ticks += 1
            if now_mono - last_procs >= self.process_interval or self._pids_changed.is_set():
                self._pids_changed.clear()
                last_procs = now_mono
                self._sample_processes()
            if now_mono - last_flush >= self.flush_interval or self._flush_now.is_set():
                self._flush_now.clear()
                last_flush = now_mono
                self._flush()
            # Schedule against the monotonic clock: ticks stay on the grid; overrun ticks are skipped, not bunched.
            tick += 1
            next_at = start + tick * self.interval
            now_mono = time.monotonic()
            if next_at < now_mono:
                skipped = int((now_mono - next_at) / self.interval) + 1
                self.stats.missed_ticks += skipped
                tick += skipped
                next_at = start + tick * self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _sample_once(self) -> None:
        rows: list[dict[str, Any]] = []
        now = time.monotonic()
        for sensor in self.sensors:
            every = getattr(sensor, "every_s", None)
            if every is not None:
                if now - self._last_read.get(sensor.name, -every) < every:
                    continue
                self._last_read[sensor.name] = now
            try:
                readings = sensor.read()
            except PartialReadError as exc:
                readings = exc.readings
                self._sensor_error(sensor.name, exc)
            except Exception as exc:  # a failing sensor must not stop the others
                self._sensor_error(sensor.name, exc)
                continue
            for reading in readings:
                state = self.devices.get(reading.key)
                if state is not None:
                    rows.append(self._row(state, reading))
        with self._lock:
            self._pending.extend(rows)

    def _sensor_error(self, name: str, exc: Exception) -> None:
        count = self.stats.count_sensor_error(name)
        if count == 1 or count % 100 == 0:
            log.warning("sensor %s failed (%d times so far): %s", name, count, exc)

    def _row(self, state: DeviceState, r: Reading) -> dict[str, Any]:
        energy_t = None
        if r.counter_j is not None:
            if state.last_raw_j is not None:
                step = counter_increment(state.last_raw_j, r.counter_j, state.info.counter_wrap_j,
                                         None if state.last_t is None else r.t - state.last_t,
                                         r.power_limit_w)
                if step.note is not None:
                    log.warning("%s: %s", state.info.key, step.note)
                state.energy_j += step.joules
            state.last_raw_j = r.counter_j
            energy_t = r.counter_t
        elif r.power_w is not None:
            # No counter: a running trapezoid, for totals and /metrics; the energy API integrates the samples.
            if state.last_t is not None and state.last_power_w is not None and r.t > state.last_t:
                state.energy_j += 0.5 * (state.last_power_w + r.power_w) * (r.t - state.last_t)
        state.last_t, state.last_power_w, state.latest = r.t, r.power_w, r
        has_energy = r.counter_j is not None or (r.power_w is not None and state.info.kind != "host")
        return {
            "device_id": state.device_id, "t": r.t, "power_w": r.power_w,
            "energy_j": state.energy_j if has_energy else None, "energy_t": energy_t,
            "counter_raw_j": r.counter_j, "timing": r.counter_timing, "stamp_err_s": r.counter_err_s,
            "util_pct": r.util_pct, "mem_util_pct": r.mem_util_pct, "mem_used_bytes": r.mem_used_bytes,
            "mem_total_bytes": r.mem_total_bytes, "temp_c": r.temp_c, "sm_clock_mhz": r.sm_clock_mhz,
            "power_limit_w": r.power_limit_w, "cpu_busy_s": r.cpu_busy_s,
        }

    def _sample_processes(self) -> None:
        with self._lock:
            pids = set(self._pids)
        # The processes followed so far first (a last reading of any that stops being followed), then the new.
        readings = self.processes.read()
        readings += self.processes.watch(pids)
        gpu_mem: dict[int, dict[str, int]] = {}
        gpu_sm: dict[int, dict[str, float]] = {}
        for state in self.devices.values():
            if state.latest is not None:
                for pid, used in state.latest.processes.items():
                    gpu_mem.setdefault(pid, {})[state.info.key] = used
                for pid, sm_s in (state.latest.process_sm_s or {}).items():
                    gpu_sm.setdefault(pid, {})[state.info.key] = sm_s
        rows = [{"node_id": self.node_id, "pid": p.pid, "t": p.t, "cpu_percent": p.cpu_percent,
                 "rss_bytes": p.rss_bytes, "gpu_mem_bytes": gpu_mem.get(p.pid) or None,
                 "gpu_sm_s": self._tree_sm_s(p, gpu_sm), "cpu_time_s": p.cpu_time_s} for p in readings]
        self._tree_sm = {pid: v for pid, v in self._tree_sm.items() if pid in pids}
        # The GPUs' other processes too: a run's share of a GPU is over every process that used it.
        now, counted = time.time(), {q for p in readings for q in (p.pid, *p.descendants)}
        rows += [{"node_id": self.node_id, "pid": pid, "t": now, "cpu_percent": None, "rss_bytes": None,
                  "gpu_mem_bytes": gpu_mem.get(pid), "gpu_sm_s": sm, "cpu_time_s": None}
                 for pid, sm in gpu_sm.items() if pid not in counted]
        with self._lock:
            self._pending_procs.extend(rows)

    def _tree_sm_s(self, p: ProcessReading, gpu_sm: dict[int, dict[str, float]]) -> dict[str, float] | None:
        """SM-seconds of a followed process and its descendants per GPU; a worker that has ended keeps its last
        figure, so the sum never goes back."""
        tree = self._tree_sm.setdefault(p.pid, {})
        for pid in (p.pid, *p.descendants):
            for key, sm_s in gpu_sm.get(pid, {}).items():
                tree.setdefault(key, {})[pid] = sm_s
        return {key: sum(by_pid.values()) for key, by_pid in tree.items()} or None

    def _flush(self, final: bool = False) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
            procs, self._pending_procs = self._pending_procs, []
        newest = max((r["t"] for r in rows), default=None)
        earliest: dict[int, float] = {}
        for r in rows:
            earliest[r["device_id"]] = min(r["t"], earliest.get(r["device_id"], r["t"]))
        session_id = self.session_id
        stopped = time.time() if final else None

        def job(session: Session) -> None:
            # Core inserts: the ORM's bookkeeping buys nothing for rows nobody reads back here.
            if rows:
                session.connection().execute(insert(Sample.__table__), rows)
                reopen_before(session, earliest)
            if procs:
                session.connection().execute(insert(ProcessSample.__table__), procs)
            values: dict[str, Any] = {}
            if newest is not None:
                values["last_sample_at"] = newest
            if stopped is not None:
                values["stopped_at"] = stopped
            if values:
                session.execute(update(SamplerSession).where(SamplerSession.id == session_id).values(**values))

        def done(fut: Future[None]) -> None:
            if fut.exception() is not None:
                log.error("could not write %d samples, keeping them for the next batch: %s", len(rows), fut.exception())
                with self._lock:
                    self._pending[:0] = rows
                    self._pending_procs[:0] = procs
                return
            if newest is not None:
                with self._written:
                    self._written_up_to = max(self._written_up_to, newest)
                    self._written.notify_all()

        fut = self.writer.submit(job)
        fut.add_done_callback(done)
        if final:
            fut.result(timeout=30.0)

    # --- what the API shows -------------------------------------------------------------------------------
    def latest(self) -> dict[str, DeviceState]:
        return self.devices
