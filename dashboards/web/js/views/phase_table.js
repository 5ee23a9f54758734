// The run page's energy per phase name: each figure with its uncertainty and provenance, on the basis shown
// (the run's share or the whole node), the energy outside every phase, and the whole run.

import { badge, h, methodBadge, panel } from "../dom.js";
import * as fmt from "../format.js";
import { phaseTree, treeOrder } from "./phase_tree.js";
import { doubt, LESS_CERTAIN, provenanceCell } from "./provenance.js";

/**
 * The figures of one basis: `share` is the answer's run_share where the run's share is shown, else null.
 */
export function basisOf(energy, share) {
  const figure = (p) => (share && p.run_share_j != null ? p.run_share_j : p.energy_j);
  return {
    share,
    figure,
    uncertainty: (p) => (share && p.run_share_j != null ? p.run_share_uncertainty_j : p.uncertainty_j),
    power: (p) => (share ? (p.duration_s > 0 ? figure(p) / p.duration_s : null) : p.avg_power_w),
    total: share ? share.energy_j : energy.total.energy_j,
    totalUncertainty: share ? share.uncertainty_j : energy.total.uncertainty_j,
  };
}

function unmarked(energy, basis, byName, depth, truncated) {
  // Energy outside every phase, where the outermost phases do not overlap one another (else it is not defined).
  if (truncated || !energy.phases.length) return null;
  const iv = [];
  for (const [name, s] of byName) {
    if (depth.get(name) !== 0) continue;
    for (let i = 0; i < s.start.length; i++) iv.push([s.start[i], s.end[i]]);
  }
  iv.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < iv.length; i++) if (iv[i][0] < iv[i - 1][1]) return null;
  let marked = 0;
  let dur = 0;
  for (const p of energy.phases) {
    if (depth.get(p.name) === 0) {
      marked += basis.figure(p);
      dur += p.duration_s;
    }
  }
  const rest = basis.total - marked;
  const restDur = energy.total.duration_s - dur;
  return rest >= 0 && restDur >= 0 ? { energy_j: rest, duration_s: restDur } : null;
}

/** The breakdown's elements: the table and its note, or an empty state where the run marked no phase. */
export function phaseTable({ energy, basis, track, deviceInfo, truncated }) {
  const { total } = basis;
  if (!energy.phases.length) {
    return [panel("empty", "No phases recorded",
      h("p", null, "This run has no phase markers, so its energy is known only as a whole: ",
        h("strong", null, fmt.energyPm(total, basis.totalUncertainty)), ` (${fmt.kwh(total)}).`),
      h("p", { class: "muted" }, "The trainer's client marks phases (train step, forward, evaluation…) as it runs."))];
  }
  const key = (did) => deviceInfo.get(did)?.key || did;
  const { byName } = track.layout;
  const tree = phaseTree(byName);
  const rows = treeOrder(energy.phases, tree, basis.figure);
  const maxShare = Math.max(...rows.map(({ row: p }) => (total > 0 ? basis.figure(p) / total : 0)), 1e-9);
  const cell = (field, value, text, cls = "num") => h("td", { class: cls, dataset: { field, value: value ?? "" } }, text);
  const bar = (share, attrs) => [h("div", { class: "bar" }, h("div", attrs(share === null ? 0 : (100 * share) / maxShare))),
    h("span", { class: "bar-label" }, fmt.pct(share))];
  const tr = ({ row: p, depth: d }) => {
    const e = basis.figure(p);
    const u = basis.uncertainty(p);
    const why = u == null ? null : doubt(p, Math.abs(e), u, key);
    const share = total > 0 ? e / total : null;
    const byDev = Object.entries(p.by_device || {}).map(([did, j]) => `${key(did)} ${fmt.energy(j)}`).join(" · ");
    return h("tr", { class: why ? "less-certain" : null, title: why,
      dataset: { phase: p.name, parent: tree.parent.get(p.name) ?? "", depth: d, lessCertain: String(Boolean(why)) } },
      h("td", { class: "phase-name" }, h("span", { style: { paddingLeft: `${d * 14}px` } },
        h("span", { class: "swatch", style: { background: track.color(p.name) } }), h("strong", null, p.name)),
        byDev ? h("div", { class: "sub", style: { paddingLeft: `${d * 14 + 16}px` } }, byDev) : null),
      cell("count", p.count, p.count.toLocaleString("en-US")),
      cell("duration_s", p.duration_s, fmt.duration(p.duration_s)),
      h("td", { class: "num", dataset: { field: "energy_j", value: e ?? "", uncertainty: u ?? "" },
        title: u == null ? "the daemon gives no uncertainty for a phase's run share: show the whole node for the measured figure's" : null },
      u == null ? [fmt.energy(e), h("span", { class: "pm-none" }, " ± n/a")] : fmt.energyPm(e, u)),
      cell("kwh", e / 3.6e6, fmt.kwh(e)),
      cell("avg_power_w", basis.power(p), fmt.power(basis.power(p))),
      h("td", { class: "share", dataset: { field: "share", value: share ?? "" } },
        bar(share, (w) => ({ class: "bar-fill", style: { width: `${w}%`, background: track.color(p.name) } }))),
      h("td", { class: "provenance", dataset: { field: "method", value: p.method } }, h("div", { class: "prov" }, why ? badge("less certain", "warn", why) : null, provenanceCell(p, energy))));
  };
  const rest = unmarked(energy, basis, byName, tree.depth, truncated);
  const tbody = h("tbody", null, rows.map(tr));
  if (rest) {
    tbody.append(h("tr", { class: "unmarked", dataset: { phase: "" } },
      h("td", { class: "phase-name" }, h("span", { class: "swatch hatched" }), h("em", null, "outside any phase")),
      h("td", { class: "num" }, fmt.DASH), h("td", { class: "num" }, fmt.duration(rest.duration_s)),
      h("td", { class: "num" }, fmt.energy(rest.energy_j)), h("td", { class: "num" }, fmt.kwh(rest.energy_j)),
      h("td", { class: "num" }, fmt.power(rest.duration_s > 0 ? rest.energy_j / rest.duration_s : null)),
      h("td", { class: "share" }, bar(total > 0 ? rest.energy_j / total : null, (w) => ({ class: "bar-fill hatched", style: { width: `${w}%` } }))),
      h("td")));
  }
  const dur = energy.total.duration_s;
  return [
    h("table", { class: "table phase-table" },
      h("thead", null, h("tr", null, h("th", null, "Phase"), h("th", { class: "num" }, "Count"), h("th", { class: "num" }, "Duration"),
        h("th", { class: "num", title: "± the standard uncertainty" }, "Energy"), h("th", { class: "num" }, "kWh"), h("th", { class: "num" }, "Avg power"),
        h("th", null, "Share of run energy"), h("th", null, "Provenance"))),
      tbody,
      h("tfoot", null, h("tr", null, h("td", null, h("strong", null, "Whole run")), h("td"),
        h("td", { class: "num" }, fmt.duration(dur)),
        h("td", { class: "num", dataset: { field: "total_energy_j", value: total, uncertainty: basis.totalUncertainty ?? "" } },
          h("strong", null, fmt.energyPm(total, basis.totalUncertainty))),
        h("td", { class: "num" }, fmt.kwh(total)), h("td", { class: "num" }, fmt.power(dur > 0 ? total / dur : null)),
        h("td", null, "100 %"), h("td", null, methodBadge(energy.total.method))))),
    h("p", { class: "muted small", dataset: { attributionNote: "" } }, basis.share
      ? `The run's share: its processes' share of the CPU energy above idle, by their CPU time (idle power is not billed: ${basis.share.idle_policy}), plus its GPUs whole. `
      : "Energy of every device the run owns, whoever used the CPU. ",
    `± is the standard uncertainty; a row over ${fmt.pct(LESS_CERTAIN, 0)} of its figure is marked (hover it for why). `,
    "Phases nest (an epoch holds its steps): an enclosing phase's figure includes what runs inside it, so the shares of nested phases overlap. Duration is the sum over each name's intervals."),
  ];
}
