"""Prometheus exposition: per-device counters and gauges from the sampler's latest readings, and one info
series per active run to join on. No run or phase labels on the high-rate series."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from telemetry_service.daemon import Daemon
from telemetry_service.store.models import Run

PREFIX = "joulemeter"
LABELS = ["hostname", "device", "uuid", "kind", "source"]


class DaemonCollector(Collector):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        node = self.daemon.settings.node
        energy = CounterMetricFamily(f"{PREFIX}_energy_joules", "Cumulative energy per device since it entered the ledger", labels=LABELS)
        power = GaugeMetricFamily(f"{PREFIX}_power_watts", "Latest power reading per device", labels=LABELS)
        util = GaugeMetricFamily(f"{PREFIX}_utilization_ratio", "Latest utilisation, 0 to 1", labels=LABELS)
        mem = GaugeMetricFamily(f"{PREFIX}_memory_used_bytes", "Memory in use", labels=LABELS)
        mem_total = GaugeMetricFamily(f"{PREFIX}_memory_total_bytes", "Memory installed", labels=LABELS)
        temp = GaugeMetricFamily(f"{PREFIX}_temperature_celsius", "Latest temperature", labels=LABELS)
        for key, state in self.daemon.sampler.devices.items():
            info, r = state.info, state.latest
            labels = [node, key, info.uuid or "", info.kind, info.source]
            if info.kind != "host" and r is not None and (r.counter_j is not None or r.power_w is not None):
                energy.add_metric(labels, state.energy_j)
            if r is None:
                continue
            if r.power_w is not None:
                power.add_metric(labels, r.power_w)
            if r.util_pct is not None:
                util.add_metric(labels, r.util_pct / 100.0)
            if r.mem_used_bytes is not None:
                mem.add_metric(labels, r.mem_used_bytes)
            if r.mem_total_bytes is not None:
                mem_total.add_metric(labels, r.mem_total_bytes)
            if r.temp_c is not None:
                temp.add_metric(labels, r.temp_c)
        yield from (energy, power, util, mem, mem_total, temp)
        runs = InfoMetricFamily(f"{PREFIX}_run", "Active runs on this node, to join with the device series",
                                labels=["hostname", "run_id", "name", "slurm_job_id"])
        with self.daemon.sessions() as session:
            for run in session.scalars(select(Run).where(Run.status == "running")):
                if any(m.node_id == self.daemon.node_id for m in run.members):
                    slurm = str((run.tags or {}).get("slurm_job_id", "") or "")
                    runs.add_metric([node, run.run_id, run.name, slurm], {})
        yield runs
        stats = self.daemon.sampler.stats
        yield GaugeMetricFamily(f"{PREFIX}_sampler_worst_gap_seconds", "Longest time between two sampler ticks",
                                value=stats.worst_gap_s)
        yield CounterMetricFamily(f"{PREFIX}_sampler_missed_ticks", "Sampler ticks skipped because one overran",
                                  value=stats.missed_ticks)
