// Which phase name nests in which, from the intervals themselves: a name is the child of the innermost other
// name whose intervals cover most of its time (train_step inside epoch, teacher_forward inside train_step).
// A depth sort cannot tell siblings from parents: eval is not inside inference because both sit at depth 0.

/** Sorted, disjoint [start, end] pieces covering a name's intervals. */
function union(starts, ends) {
  const order = starts.map((_, i) => i).sort((a, b) => starts[a] - starts[b]);
  const out = [];
  for (const i of order) {
    const last = out[out.length - 1];
    if (last && starts[i] <= last[1]) last[1] = Math.max(last[1], ends[i]);
    else out.push([starts[i], ends[i]]);
  }
  return out;
}

/**
 * The fraction of a name's time that lies inside `pieces` (another name's union). Instants (marks, whose
 * start is their end) count by whether they fall inside, so a name made only of marks nests too.
 */
function coveredFraction(s, pieces) {
  let covered = 0;
  let total = 0;
  let inside = 0;
  for (let i = 0; i < s.start.length; i++) {
    const a = s.start[i];
    const b = s.end[i];
    total += b - a;
    // Binary search for the last piece starting at or before a; intervals of a child rarely span pieces.
    let lo = 0;
    let hi = pieces.length - 1;
    let k = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (pieces[mid][0] <= a) { k = mid; lo = mid + 1; } else hi = mid - 1;
    }
    if (k >= 0 && a <= pieces[k][1] && b <= pieces[k][1]) inside += 1;
    for (let j = Math.max(k, 0); j < pieces.length && pieces[j][0] < b; j++) {
      covered += Math.max(0, Math.min(b, pieces[j][1]) - Math.max(a, pieces[j][0]));
    }
  }
  return total > 0 ? covered / total : inside / Math.max(s.start.length, 1);
}

/**
 * `byName` is PhaseTrack's layout.byName (name -> {start, end}). Returns parent (name -> name or null),
 * depth (name -> 0 for the outermost) and roots. A container must last longer in all than what it holds,
 * which also keeps the tree free of cycles.
 */
export function phaseTree(byName) {
  const names = [...byName.keys()];
  const span = new Map(names.map((n) => {
    const s = byName.get(n);
    let d = 0;
    for (let i = 0; i < s.start.length; i++) d += s.end[i] - s.start[i];
    return [n, d];
  }));
  const pieces = new Map(names.map((n) => [n, union(byName.get(n).start, byName.get(n).end)]));
  const parent = new Map();
  for (const child of names) {
    let best = null;
    for (const other of names) {
      if (other === child || !(span.get(other) > span.get(child))) continue;
      if (coveredFraction(byName.get(child), pieces.get(other)) <= 0.5) continue;
      if (best === null || span.get(other) < span.get(best)) best = other; // the innermost container
    }
    parent.set(child, best);
  }
  const depth = new Map();
  const depthOf = (n) => {
    if (!depth.has(n)) depth.set(n, parent.get(n) === null ? 0 : depthOf(parent.get(n)) + 1);
    return depth.get(n);
  };
  names.forEach(depthOf);
  return { parent, depth, roots: names.filter((n) => parent.get(n) === null) };
}

/**
 * Rows in tree order: each parent, then its children (most energy first), depth-first. Names the intervals
 * do not know (outside the loaded span) come as roots.
 */
export function treeOrder(rows, tree, figure) {
  const children = new Map();
  const known = new Set(rows.map((r) => r.name));
  for (const r of rows) {
    const p = tree.parent.get(r.name) ?? null;
    const key = p !== null && known.has(p) ? p : null;
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(r);
  }
  const out = [];
  const walk = (key, d) => {
    for (const r of (children.get(key) || []).sort((a, b) => figure(b) - figure(a))) {
      out.push({ row: r, depth: d });
      walk(r.name, d + 1);
    }
  };
  walk(null, 0);
  return out;
}
