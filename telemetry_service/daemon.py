"""The daemon's parts wired together: ledger, writer, sensors, sampler. The API and CLI drive one of these."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from telemetry_service.config import Settings
from telemetry_service.members import MemberWatch
from telemetry_service.sampler import Sampler
from telemetry_service.sensors.discover import SensorSet, discover
from telemetry_service.store.blocks import index_device
from telemetry_service.store.db import open_ledger
from telemetry_service.store.models import Run, RunMember
from telemetry_service.store.writer import Writer
from telemetry_service.visible import Gpu, Visibility, resolve_visible

log = logging.getLogger(__name__)

INDEX_EVERY_S = 30.0


class Daemon:
    def __init__(self, settings: Settings, sensors: SensorSet | None = None) -> None:
        """`sensors` replaces discovery, for embedding the daemon beside other tools on one shared binding."""
        self.settings = settings
        self.started_at = time.time()
        self.engine, self.sessions = open_ledger(settings.db)
        self.writer = Writer(self.sessions)
        self.sensors: SensorSet = sensors or discover(settings.cpu_tdp_w, settings.rapl_root, settings.simulate_gpus,
                                                      settings.simulate_trace, settings.simulate_profile,
                                                      settings.cpu_idle_fraction)
        self.sampler = Sampler(self.sensors.sensors, self.writer, self.sessions, settings.node, settings.interval,
                               settings.flush_interval, settings.process_interval)
        self.node_id = self.sampler.node_id
        self.refresh_watched_pids()
        self.members = MemberWatch(self.sessions, self.writer, self.node_id, settings.member_check_s,
                                   self.refresh_watched_pids)
        self._stop = threading.Event()
        self._indexer = threading.Thread(target=self._index_blocks, name="block-indexer", daemon=True)

    def start(self) -> None:
        self.sampler.start()
        self._indexer.start()
        self.members.start()
        log.info("sampling %d device(s) every %g s into %s", len(self.sampler.devices), self.settings.interval,
                 self.engine.url.render_as_string(hide_password=True))

    def close(self) -> None:
        """Flushes every sample read so far, then releases sensors and the ledger."""
        self._stop.set()
        self.members.stop()
        self.sampler.stop()
        self.writer.close()
        self.sensors.close()
        self.engine.dispose()

    def _index_blocks(self) -> None:
        """Packs closed minutes of this node's energy devices into blocks, through the writer, every few seconds."""
        pks = [s.device_id for s in self.sampler.devices.values() if s.info.kind != "host"]
        while not self._stop.wait(INDEX_EVERY_S):
            fut = self.writer.submit(lambda session: sum(index_device(session, pk) for pk in pks))
            try:
                fut.result(timeout=60.0)
            except Exception as exc:
                log.warning("block indexing failed (queries fall back to raw samples): %s", exc)

    def gpus(self) -> list[Gpu]:
        sensor = self.sensors.gpu_sensor
        if sensor is None:
            return []
        return [Gpu(key=d.key, index=d.index or 0, uuid=d.uuid, name=d.name) for d in sensor.devices()]

    def visible_keys(self, entries: list[str] | None, order: str | None) -> Visibility:
        """The device keys a process owns: the GPUs it can see, plus every CPU package and DRAM domain."""
        vis = resolve_visible(entries, self.gpus(), order)
        vis.keys += [k for k, s in self.sampler.devices.items() if s.info.kind in ("cpu", "dram")]
        return vis

    def refresh_watched_pids(self) -> None:
        with self.sessions() as session:
            pids = session.scalars(select(RunMember.pid).join(Run).where(
                RunMember.node_id == self.node_id, RunMember.status == "running", RunMember.pid.is_not(None))).all()
        self.sampler.watch_pids({p for p in pids if p is not None})
