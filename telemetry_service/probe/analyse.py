"""What a probe trace shows, as pure functions of its arrays: the counter's update grid, the power fields'
behaviour, the counter against integrated power, and the NVML call costs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from telemetry_service.probe.trace_file import CallCost, GpuTrace, LoadSpan, Trace

USAGE_WINDOWS_S = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
# A usage field whose fits to every window are this close (W) tells nothing: the power was too steady.
USAGE_INDISTINCT_W = 1.0
LAG_STEP_S = 0.001
# The best shift must fit the counter's increments clearly better than the worst one to be reported as its lag.
LAG_CLEAR = 0.5


@dataclass(frozen=True)
class Edges:
    """Counter updates: each lies in (lo, hi]; `after` indexes the first read that shows it."""

    lo: np.ndarray
    hi: np.ndarray
    after: np.ndarray

    @property
    def mid(self) -> np.ndarray:
        return 0.5 * (self.lo + self.hi)


@dataclass(frozen=True)
class CounterTiming:
    edges: int
    period_s: float  # slope of the least-squares grid through the edges
    median_spacing_s: float
    jitter_std_s: float  # edges against that grid (location uncertainty included)
    jitter_max_s: float
    dropped: int  # grid instants with no update: spacings of ~2x, ~3x the period
    dropped_share: float
    extra_edges: int  # spacings under half a period: updates off the grid
    location_uncertainty_s: float  # median half bracket width
    location_uncertainty_max_s: float
    resolved: bool  # polls fine enough (bracket under half a period) to see each update apart


@dataclass(frozen=True)
class InstantPower:
    refresh_period_s: float | None  # median spacing of distinct timestamps
    tracks_reads: bool  # a new timestamp on (nearly) every read: it says when it was read, not refreshed
    unix_clock: bool  # timestamps within 1 s of the reads' unix times
    age_s: float | None  # median read time minus timestamp, where on the unix clock


@dataclass(frozen=True)
class PowerUsage:
    rms_w: dict[float, float]  # moving-average window of instant power (0: instant) -> RMS difference
    best_window_s: float
    verdict: str


@dataclass(frozen=True)
class EnergyMatch:
    label: str
    kind: str
    start: float  # counter update instants bracketing what is compared
    end: float
    counter_j: float
    integral_j: float
    ratio: float | None  # counter / integral


@dataclass(frozen=True)
class GpuReport:
    index: int
    name: str
    polls: int
    poll_period_s: float
    counter: CounterTiming | None
    instant: InstantPower | None
    usage: PowerUsage | None
    counter_lag_s: float | None  # shift of integrated power that best explains each counter increment; None:
    # the power was too steady to tell
    energy: list[EnergyMatch]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProbeReport:
    host: str
    driver: str
    duration_s: float
    gpus: list[GpuReport]
    call_cost_us: dict[str, CallCost]


def counter_edges(t0: np.ndarray, t1: np.ndarray, counter: np.ndarray) -> Edges:
    """Where the counter changed between consecutive successful reads i-1 and i: in (t0[i-1], t1[i]]."""
    ok = np.flatnonzero(~np.isnan(counter))
    changed = np.flatnonzero(np.diff(counter[ok]) != 0) + 1
    return Edges(lo=t0[ok[changed - 1]], hi=t1[ok[changed]], after=ok[changed])


def counter_timing(edges: Edges) -> CounterTiming | None:
    """The update grid from the edges: period, jitter, dropped and extra updates; None under 3 edges."""
    if len(edges.mid) < 3:
        return None
    mid = edges.mid
    spacing = np.diff(mid)
    median = float(np.median(spacing))
    steps = np.rint(spacing / median).astype(int)  # 2, 3: updates the counter skipped; 0: one off the grid
    k = np.concatenate([[0], np.cumsum(steps)])
    period, offset = np.polyfit(k, mid, 1)
    residual = mid - (offset + period * k)
    dropped = int(np.sum(np.maximum(steps - 1, 0)))
    half = 0.5 * (edges.hi - edges.lo)
    return CounterTiming(
        edges=len(mid), period_s=float(period), median_spacing_s=median,
        jitter_std_s=float(np.std(residual)), jitter_max_s=float(np.max(np.abs(residual))),
        dropped=dropped, dropped_share=dropped / max(int(k[-1]), 1), extra_edges=int(np.sum(steps == 0)),
        location_uncertainty_s=float(np.median(half)), location_uncertainty_max_s=float(np.max(half)),
        resolved=bool(np.median(2 * half) < 0.5 * period),
    )


def instant_power(t0: np.ndarray, t1: np.ndarray, ts_us: np.ndarray) -> InstantPower | None:
    ok = ~np.isnan(ts_us)
    if ok.sum() < 2:
        return None
    ts, read = ts_us[ok] * 1e-6, 0.5 * (t0 + t1)[ok]
    distinct = ts[np.concatenate([[True], np.diff(ts) != 0])]
    refresh = float(np.median(np.diff(distinct))) if len(distinct) > 1 else None
    unix_clock = bool(abs(np.median(read - ts)) < 1.0)
    return InstantPower(refresh_period_s=refresh, tracks_reads=len(distinct) >= 0.9 * len(ts), unix_clock=unix_clock,
                        age_s=float(np.median(read - ts)) if unix_clock else None)


def power_series(t0: np.ndarray, t1: np.ndarray, mw: np.ndarray, ts_us: np.ndarray | None,
                 unix_clock: bool) -> tuple[np.ndarray, np.ndarray]:
    """Instant power (s, W) at its own timestamps where they are on the unix clock, else at the reads."""
    ok = ~np.isnan(mw)
    t = ts_us[ok] * 1e-6 if ts_us is not None and unix_clock else 0.5 * (t0 + t1)[ok]
    w = mw[ok] / 1000.0
    first = np.concatenate([[True], np.diff(t) > 0])  # one sample per refresh, time order kept
    return t[first], w[first]


def cumulative_j(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Trapezoid integral of power from t[0] to each t[i]."""
    return np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(t))])


def integral_j(t: np.ndarray, cum: np.ndarray, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    return np.interp(b, t, cum) - np.interp(a, t, cum)


def usage_behaviour(read_t: np.ndarray, usage_mw: np.ndarray, t: np.ndarray, w: np.ndarray) -> PowerUsage | None:
    """Which moving average of instant power the power-usage field follows best (0: the instant value)."""
    cum = cumulative_j(t, w)
    ok = ~np.isnan(usage_mw) & (read_t - max(USAGE_WINDOWS_S) >= t[0]) & (read_t <= t[-1])
    if ok.sum() < 2:
        return None
    at, usage = read_t[ok], usage_mw[ok] / 1000.0
    rms: dict[float, float] = {}
    for window in USAGE_WINDOWS_S:
        model = np.interp(at, t, w) if window == 0 else integral_j(t, cum, at - window, at) / window
        rms[window] = float(np.sqrt(np.mean((usage - model) ** 2)))
    best = min(rms, key=lambda k: rms[k])
    if max(rms.values()) - rms[best] < USAGE_INDISTINCT_W:
        verdict = "indistinguishable: power too steady"
    else:
        verdict = "instant" if best == 0 else f"{best:g} s moving average"
    return PowerUsage(rms_w=rms, best_window_s=best, verdict=verdict)


def counter_lag(edges: Edges, counter_j: np.ndarray, t: np.ndarray, cum: np.ndarray, period: float) -> float | None:
    """The shift d for which the integral over (e[k-1]-d, e[k]-d] best matches each counter increment."""
    inside = (edges.mid - 2 * period >= t[0]) & (edges.mid + period <= t[-1])
    if inside.sum() < 3:
        return None
    mid, after = edges.mid[inside], edges.after[inside]
    increments = np.diff(counter_j[after])
    shifts = LAG_STEP_S * np.arange(-round(period / 2 / LAG_STEP_S), round(period / LAG_STEP_S) + 1)
    errors = np.array([np.sum((increments - integral_j(t, cum, mid[:-1] - d, mid[1:] - d)) ** 2) for d in shifts])
    if errors.min() > LAG_CLEAR * errors.max():
        return None  # steady power: every shift explains the increments alike
    # A periodic load fits several shifts as well: the smallest of the near-best is the plausible one.
    near_best = np.flatnonzero(errors <= errors.min() * 1.05 + 1e-12)
    return float(shifts[near_best[np.argmin(np.abs(shifts[near_best]))]])


def monotone_counter_j(counter_mj: np.ndarray) -> np.ndarray:
    """Counter in J with resets taken out (only increases add up); NaN reads hold the last value."""
    ok = ~np.isnan(counter_mj)
    if not ok.any():
        return np.zeros(len(counter_mj))
    last_ok = np.maximum.accumulate(np.where(ok, np.arange(len(ok)), 0))
    last_ok[: np.argmax(ok)] = np.argmax(ok)  # before the first good read: that read's value
    steps = np.maximum(np.diff(counter_mj[last_ok]), 0.0)
    return np.concatenate([[0.0], np.cumsum(steps)]) / 1000.0


def _match(label: str, kind: str, edges: Edges, i: int, j: int, counter_j: np.ndarray, t: np.ndarray,
           cum: np.ndarray) -> EnergyMatch:
    a, b = float(edges.mid[i]), float(edges.mid[j])
    counted = float(counter_j[edges.after[j]] - counter_j[edges.after[i]])
    integral = float(integral_j(t, cum, a, b))
    return EnergyMatch(label=label, kind=kind, start=a, end=b, counter_j=counted, integral_j=integral,
                       ratio=counted / integral if integral > 0 else None)


def energy_matches(edges: Edges, counter_j: np.ndarray, t: np.ndarray, w: np.ndarray, spans: list[LoadSpan],
                   origin: float) -> list[EnergyMatch]:
    """The counter's increment against integrated instant power, between update instants: over the whole
    trace, then over each load span widened to the updates that bracket it."""
    cum = cumulative_j(t, w)
    usable = np.flatnonzero((edges.mid >= t[0]) & (edges.mid <= t[-1]))
    if len(usable) < 2:
        return []
    out = [_match("whole trace", "all", edges, usable[0], usable[-1], counter_j, t, cum)]
    mid = edges.mid[usable]
    for span in spans:
        i = int(np.searchsorted(mid, span.start, side="right")) - 1
        j = int(np.searchsorted(mid, span.end, side="left"))
        # A span running past the trace's first or last update is compared over the part the updates bracket.
        clipped = i < 0 or j >= len(mid)
        i, j = max(i, 0), min(j, len(mid) - 1)
        if j > i and (i, j) != (0, len(mid) - 1):  # one spanning the whole trace repeats its first line
            label = f"{span.kind} {span.end - span.start:.3f} s at +{span.start - origin:.2f} s" + \
                (" (clipped)" if clipped else "")
            out.append(_match(label, span.kind, edges, usable[i], usable[j], counter_j, t, cum))
    return out


def _counter_part(gpu: GpuTrace, notes: list[str]) -> tuple[Edges | None, CounterTiming | None]:
    r = gpu.reads
    if r.counter_mj is None:
        notes.append("no energy counter (NOT_SUPPORTED)")
        return None, None
    edges = counter_edges(r.t0, r.t1, r.counter_mj)
    timing = counter_timing(edges)
    if timing is None:
        notes.append(f"only {len(edges.mid)} counter updates seen: too few for a period")
    elif not timing.resolved:
        notes.append("polls too coarse to tell the counter's updates apart: the period shown is the polling's")
    return edges, timing


def analyse_gpu(gpu: GpuTrace, spans: list[LoadSpan], origin: float) -> GpuReport:
    r, notes = gpu.reads, []
    edges, timing = _counter_part(gpu, notes)
    instant = None if r.power_instant_ts_us is None else instant_power(r.t0, r.t1, r.power_instant_ts_us)
    usage, lag, energy = None, None, []
    if r.power_instant_mw is None or instant is None:
        notes.append("no instant power field: nothing to integrate")
    else:
        t, w = power_series(r.t0, r.t1, r.power_instant_mw, r.power_instant_ts_us, instant.unix_clock)
        if r.power_usage_mw is not None:
            usage = usage_behaviour(r.t1, r.power_usage_mw, t, w)  # usage is read just after t1
        if edges is not None and timing is not None and r.counter_mj is not None and len(t) > 1:
            counter_j = monotone_counter_j(r.counter_mj)
            lag = counter_lag(edges, counter_j, t, cumulative_j(t, w), timing.period_s)
            energy = energy_matches(edges, counter_j, t, w, spans, origin)
    return GpuReport(index=gpu.index, name=gpu.name, polls=len(r.t0),
                     poll_period_s=float(np.median(np.diff(r.t0))) if len(r.t0) > 1 else float("nan"),
                     counter=timing, instant=instant, usage=usage, counter_lag_s=lag, energy=energy, notes=notes)


def analyse(trace: Trace) -> ProbeReport:
    ends = [g.reads.t1[-1] for g in trace.gpus if len(g.reads.t1)]
    return ProbeReport(host=trace.host, driver=trace.driver,
                       duration_s=float(max(ends) - trace.started_at) if ends else 0.0,
                       gpus=[analyse_gpu(g, trace.load, trace.started_at) for g in trace.gpus],
                       call_cost_us=trace.call_cost_us)
