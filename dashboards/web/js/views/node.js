// This node's devices as the daemon sees them now: power, utilisation, memory, temperature, with the last two
// minutes of power, and the state of each sensor (why there is no GPU, why CPU power is an estimate).

import { apiGet, health } from "../api.js";
import { badge, clear, errorPanel, every, h, loading, panel, sourceBadge, svg } from "../dom.js";
import * as fmt from "../format.js";

const POLL_MS = 2000;
const SPARK_MS = 6000;
const SPARK_S = 120;
const KIND_ORDER = { gpu: 0, cpu: 1, dram: 2, host: 3 };
const KIND_LABEL = { gpu: "GPU", cpu: "CPU", dram: "DRAM", host: "Host" };
const KIND_COLOR = { gpu: "#2563eb", cpu: "#ea580c", dram: "#7c3aed", host: "#64748b" };
const STALE_S = 5;

function meter(label, fraction, text) {
  const f = Number.isFinite(fraction) ? Math.max(0, Math.min(1, fraction)) : null;
  return h("div", { class: "meter" },
    h("div", { class: "meter-top" }, h("span", null, label), h("span", { class: "meter-val" }, text)),
    h("div", { class: "bar" }, h("div", { class: "bar-fill", style: { width: `${f === null ? 0 : f * 100}%` } })));
}

function sparkline(t, w, color) {
  const W = 260;
  const H = 44;
  const pts = [];
  for (let i = 0; i < t.length; i++) if (w[i] !== null && w[i] !== undefined) pts.push([t[i], w[i]]);
  if (pts.length < 2) return h("div", { class: "spark empty" }, "collecting…");
  const t0 = pts[0][0];
  const t1 = pts[pts.length - 1][0];
  const top = Math.max(...pts.map((p) => p[1]), 1) * 1.1;
  const x = (v) => ((v - t0) / Math.max(t1 - t0, 1e-9)) * W;
  const y = (v) => H - (v / top) * (H - 2);
  const line = pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  return h("div", { class: "spark" }, svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "aria-label": "power, last two minutes" },
    svg("polygon", { points: `0,${H} ${line} ${W},${H}`, fill: color, opacity: 0.12 }),
    svg("polyline", { points: line, fill: "none", stroke: color, "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" })));
}

/** What runs on a node without a GPU are measured on, naming only the devices that exist. */
function noGpuSentence(devices) {
  const parts = [];
  for (const kind of ["cpu", "dram"]) {
    const of = devices.filter((d) => d.kind === kind);
    if (!of.length) continue;
    const estimated = of.every((d) => d.source === "estimate");
    parts.push(`${KIND_LABEL[kind]}${estimated ? " (estimated)" : ""}`);
  }
  if (!parts.length) return "The daemon found no GPU and no CPU power sensor to sample, so runs here have no energy figures.";
  return `The daemon found no GPU to sample, so runs here are measured on the ${parts.join(" and ")} only.`;
}

export function mount(el) {
  const ctl = new AbortController();
  const sparks = new Map(); // device id -> element
  let info = null;
  let devices = null;
  const head = h("div", { class: "page-head" });
  const sensors = h("div");
  const notice = h("div");
  const grid = h("div", { class: "device-grid" }, loading("Reading devices…"));
  el.append(head, notice, grid, sensors);

  function renderHead() {
    clear(head).append(h("div", null, h("h1", null, "Node ", info ? h("span", { class: "mono" }, info.node) : null),
      h("p", { class: "subtitle" }, info
        ? `${info.hostname} · daemon ${info.version} · ledger ${info.db} · sampling every ${fmt.duration(info.sampler.interval_s)} · up ${fmt.duration(info.uptime_s)}`
        : "Devices this daemon samples.")));
  }

  function renderSensors() {
    if (!info) return;
    const s = info.sampler;
    clear(sensors).append(h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", null, "Sensors")),
      h("table", { class: "table sensors-table" }, h("tbody", null,
        Object.entries(info.sensors || {}).map(([k, v]) => h("tr", { dataset: { sensor: k } }, h("th", { scope: "row" }, k), h("td", null, v))),
        h("tr", null, h("th", { scope: "row" }, "sampler"),
          h("td", null, `${s.ticks.toLocaleString("en-US")} ticks, ${s.missed_ticks} missed, worst gap ${fmt.duration(s.worst_gap_s)}`,
            Object.keys(s.sensor_errors || {}).length ? `; errors: ${JSON.stringify(s.sensor_errors)}` : ""))))));
  }

  function card(d) {
    const l = d.latest || {};
    const now = Date.now() / 1000;
    const stale = l.t && now - l.t > STALE_S;
    const memFrac = l.mem_total_bytes ? l.mem_used_bytes / l.mem_total_bytes : null;
    const spark = sparks.get(d.id) || h("div", { class: "spark empty" }, "collecting…");
    sparks.set(d.id, spark);
    const rows = [];
    if (l.util_pct !== null && l.util_pct !== undefined) rows.push(meter(d.kind === "gpu" ? "GPU utilisation" : "CPU utilisation", l.util_pct / 100, `${Math.round(l.util_pct)} %`));
    if (l.mem_total_bytes) rows.push(meter("Memory", memFrac, `${fmt.bytes(l.mem_used_bytes)} / ${fmt.bytes(l.mem_total_bytes)}`));
    const facts = [];
    if (l.temp_c !== null && l.temp_c !== undefined) facts.push(["Temperature", `${Math.round(l.temp_c)} °C`, "temp"]);
    if (l.sm_clock_mhz) facts.push(["SM clock", `${Math.round(l.sm_clock_mhz)} MHz`, "clock"]);
    if (d.uuid) facts.push(["UUID", h("span", { class: "mono uuid", title: d.uuid }, d.uuid), "uuid"]);
    if (d.energy_counter) facts.push(["Energy counter", `${fmt.energy(l.energy_j)}${d.update_period_s ? `, every ${fmt.duration(d.update_period_s)}` : ""}`, "counter"]);
    else if (d.kind !== "host") {
      // Without a counter the daemon integrates power; an estimated power makes an estimated energy.
      const how = d.source === "estimate" ? "integrated from estimated power" : "integrated from power";
      facts.push(["Energy", `${fmt.energy(l.energy_j)} (${how})`, "integrated"]);
    }
    return h("article", { class: `device-card kind-${d.kind}`, dataset: { device: d.id, kind: d.kind, source: d.source } },
      h("header", null,
        h("div", null, h("div", { class: "device-name" }, d.name), h("div", { class: "sub mono" }, d.id)),
        h("div", { class: "chart-badges" }, badge(KIND_LABEL[d.kind] || d.kind, "neutral"), sourceBadge(d.source),
          !d.present ? badge("not present", "warn", "not seen at the daemon's last start") : null,
          stale ? badge("stale", "warn", `last sample ${fmt.duration(now - l.t)} ago`) : null)),
      d.kind !== "host"
        ? h("div", { class: "power-now" }, h("span", { class: "big", dataset: { field: "power" } }, fmt.power(l.power_w)), h("span", { class: "muted" }, " now"))
        : h("div", { class: "power-now" }, h("span", { class: "muted" }, "host counters (no power sensor)")),
      d.kind !== "host" ? spark : null,
      rows,
      facts.length ? h("dl", { class: "facts" }, facts.map(([k, v, f]) => [h("dt", null, k), h("dd", { dataset: { field: f } }, v)])) : null);
  }

  function render() {
    const list = [...devices].sort((a, b) => (KIND_ORDER[a.kind] ?? 9) - (KIND_ORDER[b.kind] ?? 9) || (a.index ?? 0) - (b.index ?? 0));
    clear(grid).append(...list.map(card));
    clear(notice);
    const gpus = list.filter((d) => d.kind === "gpu");
    if (!gpus.length) {
      notice.append(panel("empty", "No GPU on this node",
        h("p", null, noGpuSentence(list)),
        info && info.sensors && info.sensors.nvml ? h("p", { class: "muted" }, "NVML: ", info.sensors.nvml) : null,
        h("p", { class: "muted" }, "For a demonstration without a GPU, start the daemon with ", h("code", null, "--simulate-gpus 2"), ": such devices are labelled SIMULATED everywhere.")));
    } else if (gpus.every((d) => d.source === "simulated")) {
      notice.append(h("div", { class: "callout callout-sim", dataset: { simulated: "" } }, h("strong", null, "Simulated GPUs. "),
        "This node's GPUs are simulated by the daemon: their power and energy are synthetic, not measurements."));
    }
  }

  async function poll() {
    try {
      const [d, i] = await Promise.all([apiGet("devices", null, ctl.signal), health(ctl.signal)]);
      devices = d;
      info = i;
      renderHead();
      render();
      renderSensors();
    } catch (err) {
      if (err.name === "AbortError") return;
      if (!devices) clear(grid).append(errorPanel(err, poll));
      else throw err;
    }
  }

  async function pollSparks() {
    if (!devices || !info) return;
    const now = Date.now() / 1000;
    await Promise.all(devices.filter((d) => d.kind !== "host").map(async (d) => {
      const res = await apiGet(`devices/${encodeURIComponent(d.node)}/${encodeURIComponent(d.key)}/samples`,
        { start: now - SPARK_S, end: now, max_points: SPARK_S, fields: "power_w" }, ctl.signal);
      const el_ = sparks.get(d.id);
      const next = sparkline(res.t, res.power_w, KIND_COLOR[d.kind] || "#334155");
      if (el_ && el_.isConnected) el_.replaceWith(next);
      sparks.set(d.id, next);
    }));
  }

  renderHead();
  poll().then(pollSparks);
  const stop1 = every(POLL_MS, poll);
  const stop2 = every(SPARK_MS, pollSparks);
  return () => {
    stop1();
    stop2();
    ctl.abort();
  };
}
