// Phases as the charts draw them: a colour per name, a lane per name ordered by nesting depth, and the names
// that contain no other (the innermost ones), which shade the power charts by default.

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
  "#ff9da7", "#bab0ac", "#1f77b4", "#2ca02c"];

export function colorFor(index) {
  return PALETTE[index % PALETTE.length];
}

export function withAlpha(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

export function phaseKey(p) {
  return `${p.name}\u0000${p.start}\u0000${p.end}\u0000${p.node || ""}`;
}

/**
 * Lays phases out by name: `lanes` (names, outermost first), `containers` (names that enclose another name's
 * phase), and `byName` (each name's intervals sorted by start, as parallel arrays for fast drawing).
 */
export function layout(phases) {
  const sorted = [...phases].sort((a, b) => a.start - b.start || b.end - a.end);
  const depth = new Map();
  const first = new Map();
  const containers = new Set();
  let open = [];
  for (const p of sorted) {
    if (!first.has(p.name)) first.set(p.name, p.start);
    open = open.filter((o) => o.end > p.start);
    let d = 0;
    for (const o of open) {
      if (o.end >= p.end && o.name !== p.name) {
        d += 1;
        containers.add(o.name);
      }
    }
    depth.set(p.name, Math.min(depth.has(p.name) ? depth.get(p.name) : Infinity, d));
    open.push(p);
  }
  const lanes = [...first.keys()].sort((a, b) => depth.get(a) - depth.get(b) || first.get(a) - first.get(b));
  const byName = new Map(lanes.map((n) => [n, { start: [], end: [], step: [] }]));
  for (const p of sorted) {
    const s = byName.get(p.name);
    s.start.push(p.start);
    s.end.push(p.end);
    s.step.push(p.step);
  }
  return { lanes, containers, byName, depth };
}

/**
 * Pixel rectangles for one name's intervals on an x axis: intervals closer than `minGapPx` merge, and each
 * rectangle is at least `minWidthPx` wide, so thousands of short phases stay visible and cheap to draw.
 */
export function pixelRuns(starts, ends, toPx, lo, hi, minGapPx = 0.5, minWidthPx = 1) {
  const rects = [];
  let cur = null;
  for (let i = 0; i < starts.length; i++) {
    if (ends[i] < lo || starts[i] > hi) continue;
    const a = toPx(Math.max(starts[i], lo));
    const b = Math.max(toPx(Math.min(ends[i], hi)), a + minWidthPx);
    if (cur && a - cur[1] <= minGapPx) {
      cur[1] = Math.max(cur[1], b);
    } else {
      cur = [a, b];
      rects.push(cur);
    }
  }
  return rects;
}

/** The phase at time t in one name's intervals (binary search on starts), or -1. */
export function indexAt(starts, ends, t) {
  let lo = 0;
  let hi = starts.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (starts[mid] <= t) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  // Intervals of one name rarely overlap, but a long one may start before a short one that ended already.
  for (let i = found; i >= 0 && i > found - 8; i--) {
    if (ends[i] >= t) return i;
  }
  return -1;
}
