// How far to trust each figure of the energy answer: a phase row's provenance cell and the marking of figures
// whose uncertainty is large, the completeness of the total, the devices' provenance table, and the callouts
// for what the figures could not cover.

import { badge, h, methodBadge, sourceBadge } from "../dom.js";
import * as fmt from "../format.js";

export const LESS_CERTAIN = 0.05; // a figure whose standard uncertainty passes this share of it is marked
const EXTRAPOLATED = 0.01; // below this share of the figure, extrapolation is not worth a badge
const LOW_TIMING = 0.5;

export const KIND_ORDER = { gpu: 0, cpu: 1, dram: 2, host: 3 };
export const KIND_LABEL = { gpu: "GPU", cpu: "CPU package", dram: "DRAM", host: "Host" };

const METHOD_NOTES = [
  ["counter", "difference of the device's hardware energy counter, interpolated at the phase boundaries on the counter's own update instants"],
  ["integrated", "trapezoid integral of sampled power (the device has no energy counter)"],
  ["estimated", "rests on a device whose power is estimated (e.g. CPU utilisation × TDP), not measured"],
  ["attributed", "phases shorter than the counter's update period, attributed statistically over many repeats"],
];

function simulatedIds(energy) {
  return new Set((energy.devices || []).filter((d) => d.simulated).map((d) => d.id));
}

function extrapolatedShare(p) {
  return p.energy_j ? (p.extrapolated_j || 0) / Math.abs(p.energy_j) : 0;
}

/** Method, timing quality and the badges that qualify one phase row's figure. */
export function provenanceCell(p, energy) {
  const sim = simulatedIds(energy);
  const out = [methodBadge(p.method)];
  if (p.timing_quality !== null && p.timing_quality !== undefined) {
    out.push(h("span", { class: "timing", dataset: { timingQuality: p.timing_quality },
      title: "share of the phase boundaries that rest on located counter updates" }, `timing ${fmt.pct(p.timing_quality, 0)}`));
  }
  if (p.complete === false) out.push(badge("incomplete", "warn", "some of these phases are not covered by samples: the figure leaves that part out"));
  if (extrapolatedShare(p) > EXTRAPOLATED) {
    out.push(badge("extrapolated", "warn", `${fmt.energy(p.extrapolated_j)} (${fmt.pct(extrapolatedShare(p))}) carried past the stored samples`));
  }
  if (p.short) out.push(badge("short", "warn", "some of these phases are shorter than the stored data resolves: their energy is only known statistically"));
  if (Object.keys(p.methods || {}).some((did) => sim.has(did))) {
    out.push(badge("simulated", "simulated", "rests on a simulated device: not a measurement of real hardware"));
  }
  return out;
}

/** Why a figure of uncertainty `u` is less certain than LESS_CERTAIN allows, or null where it is not. */
export function doubt(p, figure, u, deviceName) {
  if (!(figure > 0) || !(u / figure > LESS_CERTAIN)) return null;
  const reasons = [];
  const [worst] = Object.entries(p.uncertainty_by_device || {}).sort((a, b) => b[1] - a[1]);
  if (worst) {
    const how = { estimated: "estimated (e.g. CPU utilisation × TDP), not measured", integrated: "integrated from sampled power",
      attributed: "attributed statistically over repeats", counter: "read from its energy counter" }[(p.methods || {})[worst[0]]];
    reasons.push(`mostly ${deviceName(worst[0])} (± ${fmt.energy(worst[1])})${how ? `, ${how}` : ""}`);
  }
  if (p.timing_quality !== null && p.timing_quality !== undefined && p.timing_quality < LOW_TIMING) {
    reasons.push(`low timing quality: ${fmt.pct(p.timing_quality, 0)} of boundaries on located counter updates`);
  }
  if (extrapolatedShare(p) > EXTRAPOLATED) reasons.push(`${fmt.pct(extrapolatedShare(p))} extrapolated`);
  if (p.short) reasons.push("shorter than the stored data resolves");
  if (p.complete === false) reasons.push("not fully covered by samples");
  return `Uncertainty is ${fmt.pct(u / figure)} of the figure (over ${fmt.pct(LESS_CERTAIN, 0)}): ${reasons.join("; ")}.`;
}

/** "complete" or "incomplete" for the run total, saying what left a hole in it. */
export function completeness(energy) {
  if (energy.total.complete) return badge("complete", "ok", "every device's figure covers the whole run");
  const why = [];
  if ((energy.downtime || []).length) why.push("the daemon was down for part of the run");
  const holed = (energy.devices || []).filter((d) => d.complete === false).map((d) => d.id);
  if (holed.length) why.push(`samples missing on ${holed.join(", ")}`);
  if ((energy.notes || []).some((n) => n.device)) why.push("a device's figure could not be formed");
  return badge("incomplete", "warn", why.length ? `The total leaves out: ${why.join("; ")}.` : "The total does not cover the whole run.");
}

/** Each device: where its figure comes from and how far to trust it. */
export function deviceTable(energy, deviceInfo) {
  const total = energy.total.energy_j;
  const rows = [...energy.devices].sort((a, b) => (KIND_ORDER[a.kind] ?? 9) - (KIND_ORDER[b.kind] ?? 9) || a.id.localeCompare(b.id));
  const th = (text, cls, title) => h("th", { class: cls, title }, text);
  return [
    h("table", { class: "table provenance-table" },
      h("thead", null, h("tr", null, th("Device"), th("Kind"), th("Source"), th("Energy counter"), th("Method"),
        th("Timing", "num", "share of the boundaries that rest on located counter updates"),
        th("Resolution", "num", "spacing of the stored counter points or power readings"),
        th("Energy in run", "num"), th("Share", "num"), th("Coverage"), th("Holes", "num", "stretches without power readings"))),
      h("tbody", null, rows.map((d) => {
        const info = deviceInfo.get(d.id);
        const e = energy.total.by_device[d.id];
        const holes = d.holes || [];
        return h("tr", { dataset: { device: d.id, source: d.source, method: d.method || "", simulated: String(Boolean(d.simulated)) } },
          h("td", null, h("strong", null, info ? info.name : d.id), h("div", { class: "sub mono" }, d.id, info && info.uuid ? ` · ${info.uuid}` : "")),
          h("td", null, KIND_LABEL[d.kind] || d.kind),
          h("td", null, sourceBadge(d.source)),
          h("td", null, d.energy_counter ? `yes${d.update_period_s ? `, updates every ${fmt.duration(d.update_period_s)}` : ""}` : "no"),
          h("td", null, methodBadge(d.method)),
          h("td", { class: "num", dataset: { field: "timing_quality" } }, d.timing_quality == null ? fmt.DASH : fmt.pct(d.timing_quality, 0)),
          h("td", { class: "num", dataset: { field: "resolution_s" } }, fmt.duration(d.resolution_s)),
          h("td", { class: "num", dataset: { field: "energy_j", value: e ?? "", uncertainty: d.uncertainty_j ?? "" } }, fmt.energyPm(e, d.uncertainty_j)),
          h("td", { class: "num" }, fmt.pct(total > 0 && e !== undefined ? e / total : null)),
          h("td", { dataset: { field: "complete" } }, d.complete === undefined ? fmt.DASH
            : d.complete ? badge("complete", "ok") : badge("incomplete", "warn", "its samples do not cover the whole run")),
          h("td", { class: "num", dataset: { field: "holes", value: holes.length },
            title: holes.slice(0, 5).map((x) => `${fmt.clock(x.start)} – ${fmt.clock(x.end)}`).join("\n") || null }, String(holes.length)));
      }))),
    h("dl", { class: "method-notes" }, METHOD_NOTES.map(([m, text]) => [h("dt", null, methodBadge(m)), h("dd", null, text)])),
  ];
}

/** Callouts for what the figures share with other runs or could not cover. */
export function warnings(energy) {
  const out = [];
  const shared = Object.entries(energy.shared_devices || {});
  if (shared.length) {
    out.push(h("div", { class: "callout callout-warn" }, h("strong", null, "Shared devices. "),
      "Other runs overlapped this one on the same devices, and count the same joules: ",
      shared.map(([did, runs]) => `${did} with ${runs.join(", ")}`).join("; "), "."));
  }
  if ((energy.gaps || []).length) {
    out.push(h("div", { class: "callout callout-warn" }, h("strong", null, `${energy.gaps.length} gap(s) in the samples. `),
      energy.gaps.slice(0, 5).map((g) => `${g.device}: ${fmt.duration(g.duration_s)} from ${fmt.clock(g.start)} (${g.energy})`).join("; "),
      energy.gaps.length > 5 ? "; …" : ""));
  }
  if ((energy.downtime || []).length) {
    out.push(h("div", { class: "callout callout-warn", dataset: { downtime: "" } }, h("strong", null, "Daemon down. "),
      energy.downtime.slice(0, 5).map((d) => `${d.node}: ${fmt.clock(d.start)} – ${fmt.clock(d.end)}`).join("; "),
      ": nothing was sampled then, so the total is incomplete."));
  }
  for (const n of energy.notes || []) {
    out.push(h("div", { class: "callout callout-info" }, n.device ? h("strong", null, `${n.device}: `) : null, n.note));
  }
  return out;
}
