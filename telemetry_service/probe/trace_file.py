"""The probe's trace file: gzip JSON in the "joulemeter-nvml-trace/1" format, read back with validation.

A series is null where the GPU does not support the call; an element is null where that poll skipped or
failed the call (NaN in memory). `t0`/`t1` bracket each poll's counter read, its first call, so that an update
seen between two polls is located as tightly as the polling allows; the power fields are read just after.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "joulemeter-nvml-trace/1"
SERIES = ("counter_mj", "power_instant_mw", "power_instant_ts_us", "power_usage_mw")
LOAD_KINDS = ("matmul", "idle")


class TraceFileError(ValueError):
    """A trace that cannot be read or is not in the expected format; the message says where and why."""


@dataclass
class GpuReads:
    t0: np.ndarray
    t1: np.ndarray
    counter_mj: np.ndarray | None = None
    power_instant_mw: np.ndarray | None = None
    power_instant_ts_us: np.ndarray | None = None
    power_usage_mw: np.ndarray | None = None


@dataclass
class GpuTrace:
    index: int
    name: str
    uuid: str
    architecture: int | None
    reads: GpuReads


@dataclass(frozen=True)
class LoadSpan:
    start: float
    end: float
    kind: str


@dataclass(frozen=True)
class CallCost:
    median: float
    p99: float
    n: int


@dataclass
class Trace:
    host: str
    driver: str
    started_at: float
    gpus: list[GpuTrace]
    load: list[LoadSpan] = field(default_factory=list)
    call_cost_us: dict[str, CallCost] = field(default_factory=dict)


def _rounded(values: np.ndarray | None, digits: int) -> list[float | int | None] | None:
    """Rounded to what the quantity resolves (µs for times, integers for mW/mJ/µs), NaN as null: small files."""
    if values is None:
        return None
    if digits == 0:
        return [None if math.isnan(v) else int(round(v)) for v in values.tolist()]
    return [None if math.isnan(v) else round(v, digits) for v in values.tolist()]


def _gpu_json(gpu: GpuTrace) -> dict[str, Any]:
    r = gpu.reads
    reads = {"t0": _rounded(r.t0, 6), "t1": _rounded(r.t1, 6)}
    reads.update({name: _rounded(getattr(r, name), 0) for name in SERIES})
    return {"index": gpu.index, "name": gpu.name, "uuid": gpu.uuid, "architecture": gpu.architecture,
            "reads": reads}


def to_json(trace: Trace) -> dict[str, Any]:
    return {
        "format": FORMAT, "host": trace.host, "driver": trace.driver, "started_at": round(trace.started_at, 6),
        "gpus": [_gpu_json(g) for g in trace.gpus],
        "load": [{"start": round(s.start, 6), "end": round(s.end, 6), "kind": s.kind} for s in trace.load],
        "call_cost_us": {name: {"median": round(c.median, 3), "p99": round(c.p99, 3), "n": c.n}
                         for name, c in trace.call_cost_us.items()},
    }


def write_trace(trace: Trace, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        json.dump(to_json(trace), out, separators=(",", ":"))


def _need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise TraceFileError(f"{where}: missing '{key}'")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):  # JSON true is no number here
        raise TraceFileError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _series(raw: Any, where: str, length: int | None, nullable: bool) -> np.ndarray | None:
    if raw is None and nullable:
        return None
    if not isinstance(raw, list):
        raise TraceFileError(f"{where}: expected a list{' or null' if nullable else ''}")
    if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in raw):
        raise TraceFileError(f"{where}: holds something that is not a number or null")
    if length is not None and len(raw) != length:
        raise TraceFileError(f"{where}: {len(raw)} values where t0 has {length}")
    return np.array([math.nan if v is None else float(v) for v in raw], dtype=float)


def _gpu_from(raw: Any, where: str) -> GpuTrace:
    reads = _need(raw, "reads", dict, where)
    t0 = _series(_need(reads, "t0", list, f"{where}.reads"), f"{where}.reads.t0", None, False)
    assert t0 is not None
    t1 = _series(reads.get("t1"), f"{where}.reads.t1", len(t0), False)
    if np.isnan(t0).any() or np.isnan(t1).any() or (np.diff(t0) < 0).any() or (t1 < t0).any():  # type: ignore[operator]
        raise TraceFileError(f"{where}.reads: t0/t1 must be numbers with t0 rising and t1 >= t0")
    series = {name: _series(reads.get(name), f"{where}.reads.{name}", len(t0), True) for name in SERIES}
    arch = raw.get("architecture")
    if arch is not None and (isinstance(arch, bool) or not isinstance(arch, int)):
        raise TraceFileError(f"{where}.architecture: expected an integer or null")
    return GpuTrace(index=_need(raw, "index", int, where), name=_need(raw, "name", str, where),
                    uuid=_need(raw, "uuid", str, where), architecture=arch, reads=GpuReads(t0=t0, t1=t1, **series))


def _load_from(raw: Any, where: str) -> LoadSpan:
    start = float(_need(raw, "start", (int, float), where))
    end = float(_need(raw, "end", (int, float), where))
    kind = _need(raw, "kind", str, where)
    if kind not in LOAD_KINDS or end < start:
        raise TraceFileError(f"{where}: kind must be one of {LOAD_KINDS} and end >= start")
    return LoadSpan(start=start, end=end, kind=kind)


def _cost_from(raw: Any, where: str) -> CallCost:
    return CallCost(median=float(_need(raw, "median", (int, float), where)),
                    p99=float(_need(raw, "p99", (int, float), where)), n=_need(raw, "n", int, where))


def from_json(doc: Any) -> Trace:
    if not isinstance(doc, dict):
        raise TraceFileError("the file holds JSON but not an object")
    if doc.get("format") != FORMAT:
        raise TraceFileError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    gpus = [_gpu_from(g, f"gpus[{i}]") for i, g in enumerate(_need(doc, "gpus", list, "trace"))]
    load = [_load_from(s, f"load[{i}]") for i, s in enumerate(_need(doc, "load", list, "trace"))]
    costs = _need(doc, "call_cost_us", dict, "trace")
    return Trace(host=_need(doc, "host", str, "trace"), driver=_need(doc, "driver", str, "trace"),
                 started_at=float(_need(doc, "started_at", (int, float), "trace")), gpus=gpus, load=load,
                 call_cost_us={name: _cost_from(c, f"call_cost_us.{name}") for name, c in costs.items()})


def read_trace(path: Path) -> Trace:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as src:
            doc = json.load(src)
    except FileNotFoundError:
        raise TraceFileError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise TraceFileError(f"{path}: not a readable gzip file ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceFileError(f"{path}: not JSON ({exc})") from None
    try:
        return from_json(doc)
    except TraceFileError as exc:
        raise TraceFileError(f"{path}: {exc}") from None
