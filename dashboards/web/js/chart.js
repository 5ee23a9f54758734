// Power-over-time charts (uPlot, vendored) sharing one time axis, the run's phases drawn behind the power
// as coloured bands, and a phase timeline with a lane per phase name. Dragging across any of them zooms all.

import { colorFor, indexAt, layout, pixelRuns, withAlpha } from "./phases.js";

const uPlot = globalThis.uPlot;
// Every chart reserves the same width for its y axis, so all plot areas line up on the time axis.
export const AXIS_SIZE = 112;
const AXIS_FONT = "11px Inter, system-ui, sans-serif";
const AXIS_STROKE = "#5b6472";
const GRID = { stroke: "#e8ebf0", width: 1 };
const TICKS = { stroke: "#d5dae1", width: 1, size: 4 };
const SHARED_EVENTS = new Set(["mousemove", "mouseenter", "mouseleave"]);

/** The phases of a run as every chart sees them; `shaded` holds the names drawn behind the power. */
export class PhaseTrack {
  constructor(phases = []) {
    this.phases = [];
    this.colors = new Map();
    this.shaded = new Set();
    this.userPicked = false;
    this.listeners = new Set();
    this.set(phases);
  }

  set(phases) {
    this.phases = phases;
    this.layout = layout(phases);
    for (const name of this.layout.lanes) {
      if (!this.colors.has(name)) this.colors.set(name, colorFor(this.colors.size));
    }
    if (!this.userPicked) {
      this.shaded = new Set(this.layout.lanes.filter((n) => !this.layout.containers.has(n)));
    }
    this.changed();
  }

  toggle(name) {
    this.userPicked = true;
    if (this.shaded.has(name)) this.shaded.delete(name);
    else this.shaded.add(name);
    this.changed();
  }

  color(name) {
    return this.colors.get(name) || "#999999";
  }

  changed() {
    for (const fn of this.listeners) fn();
  }

  /** The innermost phase at time t (for the cursor read-out). */
  at(t) {
    const { lanes, byName } = this.layout;
    for (let i = lanes.length - 1; i >= 0; i--) {
      const s = byName.get(lanes[i]);
      const j = indexAt(s.start, s.end, t);
      if (j >= 0) return { name: lanes[i], start: s.start[j], end: s.end[j], step: s.step[j] };
    }
    return null;
  }
}

function baseOptions(width, height, view, hooks) {
  return {
    width,
    height,
    pxAlign: 0,
    padding: [6, 20, 0, 0], // fixed, so that every chart's plot area spans the same pixels

    legend: { show: false },
    cursor: {
      // Only the cursor line is shared: a drag (and its zoom) belongs to the chart it happened on, else every
      // synced chart would report the same selection and each would ask the daemon again.
      sync: { key: view.syncKey, setSeries: false, filters: { pub: (type) => SHARED_EVENTS.has(type) } },
      drag: { x: true, y: false, setScale: false },
      points: { show: false },
      y: false,
    },
    select: { show: true },
    scales: {
      x: { time: true, range: (u, min, max) => (view.range ? [view.range[0], view.range[1]] : [min, max]) },
    },
    hooks: {
      setSelect: [(u) => {
        if (u.select.width > 3) {
          const a = u.posToVal(u.select.left, "x");
          const b = u.posToVal(u.select.left + u.select.width, "x");
          view.onZoom([a, b]);
        }
        u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
      }],
      setCursor: [(u) => {
        if (u.cursor.left == null || u.cursor.left < 0) view.onCursor(null, u);
        else if (u.cursor.event) view.onCursor(u.posToVal(u.cursor.left, "x"), u);
      }],
      ...hooks,
    },
  };
}

/** Clock labels for the time axis, with as many decimals of a second as the zoom needs. */
function timeLabels(u, splits) {
  const span = u.scales.x.max - u.scales.x.min;
  const decimals = span < 2 ? 2 : span < 20 ? 1 : 0;
  return splits.map((t) => {
    const d = new Date(t * 1000);
    const hms = d.toLocaleTimeString("en-GB", { hour12: false });
    const frac = decimals ? (t % 1).toFixed(decimals).slice(1) : "";
    const label = span < 60 ? `${hms}${frac}` : hms.slice(0, span < 3 * 3600 ? 8 : 5);
    return span > 2 * 86400 ? `${d.toLocaleDateString("en-CA")} ${label}` : label;
  });
}

function attachResize(container, u, height) {
  const ro = new ResizeObserver(() => {
    const w = Math.floor(container.clientWidth);
    if (w > 0 && w !== u.width) u.setSize({ width: w, height });
  });
  ro.observe(container);
  return ro;
}

/** Puts nulls where samples stop for a while (daemon down, sensor lost), so the line breaks instead of lying. */
function withGaps(t, cols, interval) {
  if (t.length < 3) return [t, ...cols];
  const dts = [];
  for (let i = 1; i < t.length; i += Math.max(1, Math.floor(t.length / 256))) dts.push(t[i] - t[i - 1]);
  dts.sort((a, b) => a - b);
  const typical = Math.max(dts[Math.floor(dts.length / 2)], interval || 0);
  const limit = Math.max(10 * typical, 1.0);
  const out = [[t[0]], ...cols.map((c) => [c[0]])];
  for (let i = 1; i < t.length; i++) {
    if (t[i] - t[i - 1] > limit) {
      out[0].push((t[i] + t[i - 1]) / 2);
      for (let k = 0; k < cols.length; k++) out[k + 1].push(null);
    }
    out[0].push(t[i]);
    for (let k = 0; k < cols.length; k++) out[k + 1].push(cols[k][i]);
  }
  return out;
}

/** Mean power of one device as a line, with the min–max envelope of each downsampled bucket around it. */
export class PowerChart {
  constructor(container, view, track, { color, height = 170, unit = "W" }) {
    this.container = container;
    this.track = track;
    this.height = height;
    this.points = 0;
    this.series = { t: [], mean: [], min: [], max: [] };
    const fill = withAlpha(color, 0.16);
    const opts = baseOptions(Math.max(container.clientWidth, 300), height, view, {
      drawClear: [(u) => this.drawBands(u)],
    });
    opts.series = [
      {},
      { label: "mean", stroke: color, width: 1.5, points: { show: false } },
      { label: "max", stroke: "transparent", width: 0, points: { show: false } },
      { label: "min", stroke: "transparent", width: 0, points: { show: false } },
    ];
    opts.bands = [{ series: [2, 3], fill }];
    opts.scales.y = { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] };
    opts.axes = [
      { font: AXIS_FONT, stroke: AXIS_STROKE, grid: GRID, ticks: TICKS, size: 30, space: 90, values: timeLabels },
      { font: AXIS_FONT, stroke: AXIS_STROKE, grid: GRID, ticks: TICKS, size: AXIS_SIZE,
        values: (u, vals) => vals.map((v) => `${+v.toPrecision(4)} ${unit}`) },
    ];
    this.u = new uPlot(opts, [[], [], [], []], container);
    this.ro = attachResize(container, this.u, height);
    this.unlisten = addListener(track, () => this.u.redraw(false, false));
  }

  /** Replaces the data (columns from the samples endpoint). */
  setData(cols, interval) {
    this.series = { t: cols.t, mean: cols.power_w, min: cols.power_min_w, max: cols.power_max_w };
    this.render(interval);
  }

  /** Adds samples after the last one held (live view). */
  append(cols, interval) {
    const last = this.series.t.length ? this.series.t[this.series.t.length - 1] : -Infinity;
    let i = 0;
    while (i < cols.t.length && cols.t[i] <= last) i++;
    if (i >= cols.t.length) return 0;
    const s = this.series;
    s.t = s.t.concat(cols.t.slice(i));
    s.mean = s.mean.concat(cols.power_w.slice(i));
    s.min = s.min.concat(cols.power_min_w.slice(i));
    s.max = s.max.concat(cols.power_max_w.slice(i));
    this.render(interval);
    return cols.t.length - i;
  }

  lastT() {
    return this.series.t.length ? this.series.t[this.series.t.length - 1] : null;
  }

  render(interval) {
    const s = this.series;
    this.points = s.t.length;
    this.container.dataset.points = String(this.points);
    this.u.setData(withGaps(s.t, [s.mean, s.max, s.min], interval), true);
  }

  setRange(lo, hi) {
    this.u.setScale("x", { min: lo, max: hi });
  }

  drawBands(u) {
    const { left, top, width, height } = u.bbox;
    const { min, max } = u.scales.x;
    let count = 0;
    if (min != null && max != null && this.track.shaded.size) {
      const ctx = u.ctx;
      const dpr = uPlot.pxRatio;
      ctx.save();
      ctx.beginPath();
      ctx.rect(left, top, width, height);
      ctx.clip();
      for (const name of this.track.layout.lanes) {
        if (!this.track.shaded.has(name)) continue;
        const s = this.track.layout.byName.get(name);
        ctx.fillStyle = withAlpha(this.track.color(name), 0.2);
        const rects = pixelRuns(s.start, s.end, (v) => u.valToPos(v, "x", true), min, max, 0.5 * dpr, dpr);
        for (const [a, b] of rects) ctx.fillRect(a, top, b - a, height);
        count += rects.length;
      }
      ctx.restore();
    }
    this.container.dataset.bands = String(count);
  }

  /** Mean power at time t (nearest sample), for the cursor read-out. */
  valueAt(t) {
    const s = this.series;
    if (!s.t.length) return null;
    let lo = 0;
    let hi = s.t.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (s.t[mid] <= t) lo = mid;
      else hi = mid;
    }
    const i = Math.abs(s.t[hi] - t) < Math.abs(s.t[lo] - t) ? hi : lo;
    return { t: s.t[i], mean: s.mean[i], min: s.min[i], max: s.max[i] };
  }

  destroy() {
    this.ro.disconnect();
    this.unlisten();
    this.u.destroy();
  }
}

function addListener(track, fn) {
  track.listeners.add(fn);
  return () => track.listeners.delete(fn);
}

/** One lane per phase name, on the charts' time axis. */
export class PhaseTimeline {
  constructor(container, view, track) {
    this.container = container;
    this.track = track;
    this.view = view;
    this.u = null;
    this.build();
    this.unlisten = addListener(track, () => {
      if (this.u && this.laneCount !== this.track.layout.lanes.length) this.build();
      else if (this.u) this.u.redraw(false, false);
    });
  }

  laneHeight() {
    return 18;
  }

  build() {
    if (this.u) {
      this.ro.disconnect();
      this.u.destroy();
    }
    const lanes = this.track.layout.lanes;
    this.laneCount = lanes.length;
    const n = Math.max(lanes.length, 1);
    this.height = n * this.laneHeight() + 8;
    const opts = baseOptions(Math.max(this.container.clientWidth, 300), this.height, this.view, {
      draw: [(u) => this.drawLanes(u)],
    });
    // An invisible series keeps the lane scale (and so the lane labels) alive without drawing anything.
    opts.series = [{}, { stroke: "transparent", width: 0, points: { show: false } }];
    opts.scales.y = { range: () => [-0.5, n - 0.5], dir: -1 };
    opts.axes = [
      { show: false },
      {
        font: AXIS_FONT, stroke: AXIS_STROKE, size: AXIS_SIZE, grid: { show: false }, ticks: { show: false },
        splits: () => lanes.map((_, i) => i),
        values: (u, splits) => splits.map((i) => shorten(lanes[i] || "", 16)),
      },
    ];
    this.u = new uPlot(opts, [[0, 1], [0, 0]], this.container);
    this.ro = attachResize(this.container, this.u, this.height);
    this.container.dataset.lanes = String(lanes.length);
  }

  drawLanes(u) {
    const { left, top, width, height } = u.bbox;
    const { min, max } = u.scales.x;
    const ctx = u.ctx;
    const dpr = uPlot.pxRatio;
    const lanes = this.track.layout.lanes;
    const laneH = height / Math.max(lanes.length, 1);
    let drawn = 0;
    let phases = 0;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    lanes.forEach((name, i) => {
      const s = this.track.layout.byName.get(name);
      phases += s.start.length;
      const y = top + i * laneH + laneH * 0.15;
      const hgt = laneH * 0.7;
      if (i % 2 === 1) {
        ctx.fillStyle = "rgba(15, 23, 42, 0.03)";
        ctx.fillRect(left, top + i * laneH, width, laneH);
      }
      const on = this.track.shaded.has(name);
      ctx.fillStyle = withAlpha(this.track.color(name), on ? 0.9 : 0.45);
      const rects = pixelRuns(s.start, s.end, (v) => u.valToPos(v, "x", true), min, max, 0.5 * dpr, dpr);
      for (const [a, b] of rects) ctx.fillRect(a, y, b - a, hgt);
      drawn += rects.length;
    });
    ctx.restore();
    this.container.dataset.phases = String(phases);
    this.container.dataset.drawn = String(drawn);
  }

  /** Keeps the (data-less) timeline on the charts' range. */
  setRange(lo, hi) {
    this.u.setData([[lo, hi], [0, 0]], true);
  }

  destroy() {
    this.ro.disconnect();
    this.unlisten();
    this.u.destroy();
  }
}

function shorten(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
