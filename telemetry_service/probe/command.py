"""`probe` and `probe-report` subcommands: record a trace of raw NVML readings, and say what one shows."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import socket
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from telemetry_service.probe.analyse import GpuReport, ProbeReport, analyse
from telemetry_service.probe.trace_file import TraceFileError, read_trace, write_trace


def add_parsers(sub: Any) -> None:
    probe = sub.add_parser("probe", help="poll every GPU's energy counter and power fields, write the raw readings")
    probe.add_argument("--seconds", type=float, default=30.0, help="how long to poll (default 30)")
    probe.add_argument("--out", type=Path, required=True, help="trace file to write (gzip JSON)")
    probe.add_argument("--poll-ms", type=float, default=1.0, help="poll interval in ms (default 1)")
    probe.add_argument("--load", choices=["auto", "none"], default="auto",
                       help="auto: run idle stretches and matmul bursts on the GPU when torch sees CUDA")
    probe.add_argument("--simulate-gpus", type=int, default=0, metavar="N",
                       help="probe N simulated GPUs instead of NVML (no load is run on them)")
    report = sub.add_parser("probe-report", help="what a probe trace shows: counter period, jitter, energy")
    report.add_argument("trace", type=Path)
    report.add_argument("--json", action="store_true", help="print the figures as JSON")


def _record(args: argparse.Namespace) -> int:
    from telemetry_service.probe.load import GpuLoad, LoadError, cuda_available
    from telemetry_service.probe.record import ProbeError, record

    if args.seconds <= 0 or args.poll_ms <= 0 or args.simulate_gpus < 0:
        print("error: --seconds and --poll-ms must be positive, --simulate-gpus not negative", file=sys.stderr)
        return 2
    if args.simulate_gpus:
        from telemetry_service.probe.simulated import simulated_binding
        nvml: Any = simulated_binding(args.simulate_gpus)
        host = "simulated"
    else:
        import pynvml
        nvml, host = pynvml, socket.gethostname()
    # A load on a real GPU says nothing about simulated ones, which play their own pattern.
    load = GpuLoad() if args.load == "auto" and not args.simulate_gpus and cuda_available() else None
    try:
        if load is not None:
            load.start()
        trace = record(nvml, args.seconds, args.poll_ms / 1000.0, host, load)
    except (ProbeError, LoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if load is not None:
            load.close()
    write_trace(trace, args.out)
    polls = ", ".join(f"GPU {g.index}: {len(g.reads.t0)} polls" for g in trace.gpus)
    print(f"wrote {args.out} ({polls}; load: {'matmul schedule' if load else 'idle'})")
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def report_json(report: ProbeReport) -> str:
    return json.dumps(_jsonable(dataclasses.asdict(report)), indent=2)


def _ms(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.{digits}f} ms"


def _gpu_table(gpu: GpuReport) -> Table:
    table = Table(title=f"GPU {gpu.index}: {gpu.name}", show_header=False, title_justify="left")
    table.add_row("polls", f"{gpu.polls} every {_ms(gpu.poll_period_s, 3)}")
    c = gpu.counter
    if c is not None:
        table.add_row("counter update period", f"{_ms(c.period_s, 3)} (median spacing {_ms(c.median_spacing_s, 3)}, "
                                               f"{c.edges} updates)")
        table.add_row("counter jitter", f"std {_ms(c.jitter_std_s, 3)}, max {_ms(c.jitter_max_s, 3)}")
        table.add_row("dropped updates", f"{c.dropped} ({c.dropped_share:.1%}); off-grid updates {c.extra_edges}")
        table.add_row("edge location ±", f"median {_ms(c.location_uncertainty_s, 3)}, "
                                         f"max {_ms(c.location_uncertainty_max_s, 3)}")
    if gpu.counter_lag_s is not None:
        table.add_row("counter lag vs power", _ms(gpu.counter_lag_s, 1))
    i = gpu.instant
    if i is not None:
        refresh = "new timestamp on every read" if i.tracks_reads else f"refresh {_ms(i.refresh_period_s)}"
        table.add_row("instant power field", f"{refresh}; age when read {_ms(i.age_s)}"
                                             + ("" if i.unix_clock else "; timestamps not on the unix clock"))
    u = gpu.usage
    if u is not None:
        fits = ", ".join(f"{w:g}s: {rms:.1f} W" for w, rms in u.rms_w.items())
        table.add_row("power usage field", f"{u.verdict} (RMS vs moving average of instant power: {fits})")
    for m in gpu.energy:
        ratio = "-" if m.ratio is None else f"{m.ratio:.4f}"
        table.add_row(f"counter/integral {m.label}", f"{ratio} ({m.counter_j:.2f} J vs {m.integral_j:.2f} J)")
    for note in gpu.notes:
        table.add_row("note", note)
    return table


def print_report(report: ProbeReport, console: Console) -> None:
    console.print(f"host {report.host}, driver {report.driver}, {report.duration_s:.1f} s")
    for gpu in report.gpus:
        console.print(_gpu_table(gpu))
    costs = Table("NVML call", "median µs", "p99 µs", "n", title="NVML call costs", title_justify="left")
    for name, cost in report.call_cost_us.items():
        costs.add_row(name, f"{cost.median:.1f}", f"{cost.p99:.1f}", str(cost.n))
    console.print(costs)


def _report(args: argparse.Namespace) -> int:
    try:
        trace = read_trace(args.trace)
    except TraceFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = analyse(trace)
    if args.json:
        print(report_json(report))
    else:
        print_report(report, Console(width=160))
    return 0


def main(args: argparse.Namespace) -> int:
    return _record(args) if args.command == "probe" else _report(args)
