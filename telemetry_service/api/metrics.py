"""Prometheus exposition: per-device counters and gauges from the sampler's latest readings, and one info
series per active run to join on.

No run or phase labels on the per-device series: runs come and go far faster than Prometheus should create
series, so a dashboard joins `joulemeter_run_info` (on `hostname`) to the device series instead. The energy
counter continues from the ledger across daemon restarts, so `rate()` and `increase()` see no reset.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select

from telemetry_service.daemon import Daemon
from telemetry_service.sensors.base import Reading
from telemetry_service.store.models import Run, RunMember

PREFIX = "joulemeter"
LABELS = ["hostname", "device", "uuid", "kind", "source"]
# The run tag that carries the Slurm job id (for an array task: "<array job>_<task>", as sacct names it).
SLURM_TAG = "slurm_job_id"

# (name, help, how to read it from a Reading): the per-device gauges besides power.
GAUGES: list[tuple[str, str, str]] = [
    ("utilization_ratio", "Share of the last sampling period the device was busy, 0 to 1", "util"),
    ("memory_utilization_ratio", "Share of the last sampling period device memory was read or written, 0 to 1",
     "mem_util"),
    ("memory_used_bytes", "Device (or host) memory in use", "mem_used"),
    ("memory_total_bytes", "Device (or host) memory installed", "mem_total"),
    ("temperature_celsius", "Device temperature", "temp"),
    ("sm_clock_hertz", "GPU streaming-multiprocessor clock", "sm_clock"),
    ("power_limit_watts", "Enforced power limit", "power_limit"),
]


def _gauge_value(r: Reading, what: str) -> float | None:
    match what:
        case "util":
            return None if r.util_pct is None else r.util_pct / 100.0
        case "mem_util":
            return None if r.mem_util_pct is None else r.mem_util_pct / 100.0
        case "mem_used":
            return None if r.mem_used_bytes is None else float(r.mem_used_bytes)
        case "mem_total":
            return None if r.mem_total_bytes is None else float(r.mem_total_bytes)
        case "temp":
            return r.temp_c
        case "sm_clock":
            return None if r.sm_clock_mhz is None else r.sm_clock_mhz * 1e6
        case "power_limit":
            return r.power_limit_w
    raise ValueError(what)


class DaemonCollector(Collector):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        yield from self._devices()
        yield self._runs()
        yield from self._sampler()

    def _devices(self) -> Iterator[Metric]:
        node = self.daemon.settings.node
        energy = CounterMetricFamily(f"{PREFIX}_energy_joules", "Cumulative energy per device since it entered the "
                                     "ledger (hardware counter where there is one, else integrated power)",
                                     labels=LABELS)
        power = GaugeMetricFamily(f"{PREFIX}_power_watts", "Latest power reading per device", labels=LABELS)
        seen = GaugeMetricFamily(f"{PREFIX}_last_reading_timestamp_seconds",
                                 "When the device was last read: a stale value means a sensor stopped answering",
                                 labels=LABELS)
        gauges = {what: GaugeMetricFamily(f"{PREFIX}_{name}", help_, labels=LABELS) for name, help_, what in GAUGES}
        for key, state in self.daemon.sampler.devices.items():
            info, r = state.info, state.latest
            if r is None:  # not read yet since this start: absent, rather than a counter that dips to zero
                continue
            labels = [node, key, info.uuid or "", info.kind, info.source]
            seen.add_metric(labels, r.t)
            if info.kind != "host" and (r.counter_j is not None or r.power_w is not None):
                energy.add_metric(labels, state.energy_j)
            if r.power_w is not None:
                power.add_metric(labels, r.power_w)
            for what, family in gauges.items():
                value = _gauge_value(r, what)
                if value is not None:
                    family.add_metric(labels, value)
        yield energy
        yield power
        yield from gauges.values()
        yield seen

    def _runs(self) -> Metric:
        runs = InfoMetricFamily(f"{PREFIX}_run", "Runs in progress with a process on this node, to join with the "
                                "device series on hostname", labels=["hostname", "run_id", "name", "slurm_job_id"])
        node = self.daemon.settings.node
        with self.daemon.sessions() as session:
            here = select(RunMember.run_pk).where(RunMember.node_id == self.daemon.node_id)
            rows = session.execute(select(Run.run_id, Run.name, Run.tags)
                                   .where(Run.status == "running", Run.id.in_(here))).all()
        for run_id, name, tags in sorted(rows, key=lambda r: r[0]):
            slurm = (tags or {}).get(SLURM_TAG)
            runs.add_metric([node, run_id, name, "" if slurm is None else str(slurm)], {})
        return runs

    def _sampler(self) -> Iterator[Metric]:
        stats, node = self.daemon.sampler.stats, [self.daemon.settings.node]
        ticks = CounterMetricFamily(f"{PREFIX}_sampler_ticks", "Sampling rounds since the daemon started",
                                    labels=["hostname"])
        ticks.add_metric(node, stats.ticks)
        missed = CounterMetricFamily(f"{PREFIX}_sampler_missed_ticks", "Sampler ticks skipped because one overran",
                                     labels=["hostname"])
        missed.add_metric(node, stats.missed_ticks)
        gap = GaugeMetricFamily(f"{PREFIX}_sampler_worst_gap_seconds", "Longest time between two sampler ticks",
                                labels=["hostname"])
        gap.add_metric(node, stats.worst_gap_s)
        errors = CounterMetricFamily(f"{PREFIX}_sensor_errors", "Failed sensor reads since the daemon started",
                                     labels=["hostname", "sensor"])
        for sensor, count in sorted(stats.sensor_errors.items()):
            errors.add_metric([*node, sensor], count)
        yield from (ticks, missed, gap, errors)
