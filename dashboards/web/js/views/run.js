// One run: power over time per device with the phases as bands on the same axis (drag to zoom, which asks the
// daemon for finer samples), energy per phase name, where each figure comes from, and a live view while the
// run is still going.

import { ApiError, apiGet, health as fetchHealth } from "../api.js";
import { PhaseTimeline, PhaseTrack, PowerChart } from "../chart.js";
import { badge, clear, errorPanel, every, h, loading, methodBadge, panel, sourceBadge, statusPill } from "../dom.js";
import * as fmt from "../format.js";
import { phaseKey } from "../phases.js";
import { basisOf, phaseTable } from "./phase_table.js";
import { completeness, deviceTable, KIND_LABEL, KIND_ORDER, warnings } from "./provenance.js";
import { hostsOf } from "./runs.js";

const KIND_COLOR = { gpu: "#2563eb", cpu: "#ea580c", dram: "#7c3aed", host: "#64748b" };
const LIVE_MS = 1000;
const ENERGY_MS = 4000;
const PHASE_LIMIT = 20000;
const LIVE_POINT_CAP = 8000; // past this many points a live chart is re-read downsampled
const MIN_ZOOM_S = 0.2;
const CHART_FIELDS = "power_w,power_min_w,power_max_w";

function ids(run) {
  const out = [];
  for (const m of run.members || []) for (const d of m.devices || []) if (!out.includes(d)) out.push(d);
  return out;
}

function nodesOf(run) {
  return [...new Set((run.members || []).map((m) => m.node))];
}

export function mount(el, { id }) {
  const ctl = new AbortController();
  const view = { syncKey: `run-${Math.random().toString(36).slice(2)}`, range: null, onZoom: (r) => zoomTo(r), onCursor };
  const track = new PhaseTrack([]);
  const charts = new Map(); // device id -> { chart, card, info }
  const deviceInfo = new Map(); // device id -> row of GET /devices
  const phaseKeys = new Set();
  let run = null;
  let energy = null;
  let timeline = null;
  let phasesTruncated = false;
  let zoomed = false;
  let generation = 0;
  let stopLive = null;
  let stopEnergy = null;
  let interval = 0.1;
  let liveEnd = null;
  let ui = null;
  let basis = null; // "run-share" (the default where the daemon gives one) or "node"

  el.append(loading("Loading run…"));
  start();

  async function start() {
    try {
      run = await apiGet(`runs/${encodeURIComponent(id)}`, null, ctl.signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      clear(el);
      if (err instanceof ApiError && err.status === 404) {
        el.append(panel("error", "Run not found",
          h("p", null, "There is no run with id ", h("code", null, id), " in this daemon's ledger. ",
            "It may have been registered with another daemon, or the link is mistyped."),
          h("a", { class: "btn", href: "#/runs" }, "Back to runs")));
      } else {
        el.append(errorPanel(err, () => { clear(el).append(loading("Loading run…")); start(); }));
      }
      return;
    }
    health();
    ui = skeleton();
    clear(el).append(ui.root);
    renderHeader();
    renderCards();
    view.range = span();
    await Promise.all([loadDeviceNames(), buildCharts(), loadPhases(null)]);
    loadEnergy();
    if (run.status === "running") goLive();
  }

  async function health() {
    try {
      const info = await fetchHealth(ctl.signal);
      if (info && info.sampler && info.sampler.interval_s) interval = info.sampler.interval_s;
    } catch {
      // the interval only tunes where the charts break the line for gaps
    }
  }

  function span() {
    const end = run.ended_at ?? Date.now() / 1000;
    return [run.started_at, Math.max(end, run.started_at + MIN_ZOOM_S)];
  }

  // --- layout ----------------------------------------------------------------------------------------------
  function skeleton() {
    const s = {};
    s.header = h("div", { class: "page-head run-head" });
    s.simBanner = h("div", { class: "callout callout-sim", hidden: true, dataset: { simulated: "" } });
    s.cards = h("div", { class: "cards" });
    s.metrics = h("div", { class: "metrics-row" });
    s.rangeText = h("span", { class: "range-text" });
    s.resetBtn = h("button", { class: "btn btn-small", hidden: true, onclick: () => zoomTo(null) }, "Reset zoom");
    s.liveBtn = h("button", { class: "btn btn-small live-btn", hidden: true, onclick: toggleLive });
    s.refining = h("span", { class: "refining", hidden: true }, h("span", { class: "spinner" }), "refining…");
    s.legend = h("div", { class: "phase-legend", "aria-label": "phase names: click to shade on the charts" });
    s.readout = h("div", { class: "readout" }, h("span", { class: "muted" }, "Drag across a chart to zoom in; double-click to zoom out."));
    s.timeline = h("div", { class: "timeline" });
    s.timelineWrap = h("div", { class: "timeline-wrap" }, h("div", { class: "chart-title" }, "Phases"), s.timeline);
    s.phaseNote = h("p", { class: "muted small", hidden: true });
    s.devices = h("div", { class: "device-charts" });
    s.chartsSection = h("section", { class: "card charts", dataset: { state: "loading" } },
      h("div", { class: "card-head" },
        h("h2", null, "Power over time"),
        h("div", { class: "chart-tools" }, s.refining, s.rangeText, s.resetBtn, s.liveBtn)),
      s.legend, s.readout, s.timelineWrap, s.phaseNote, s.devices);
    s.breakdown = h("div", null, loading("Computing energy per phase…"));
    s.basisBtn = h("button", { class: "btn btn-small basis-toggle", hidden: true, onclick: toggleBasis });
    s.breakdownSection = h("section", { class: "card", id: "phase-energy" },
      h("div", { class: "card-head" }, h("h2", null, "Energy by phase"), s.basisBtn), s.breakdown);
    s.provenance = h("div", null, loading("Loading provenance…"));
    s.provenanceSection = h("section", { class: "card", id: "provenance" },
      h("div", { class: "card-head" }, h("h2", null, "Devices and measurement provenance")), s.provenance);
    s.warnings = h("div", { class: "warnings" });
    s.details = h("div");
    s.root = h("div", { class: "run-page", dataset: { runId: id } },
      s.header, s.simBanner, s.cards, s.metrics, s.warnings, s.chartsSection, s.breakdownSection, s.provenanceSection, s.details);
    s.root.addEventListener("dblclick", (e) => {
      if (e.target.closest(".u-over")) zoomTo(null);
    });
    return s;
  }

  function renderHeader() {
    const tags = Object.entries(run.tags || {}).map(([k, v]) => h("span", { class: "tag" }, v === null || v === "" ? k : `${k}: ${v}`));
    clear(ui.header).append(
      h("div", null,
        h("nav", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / "),
        h("h1", null, run.name, " ", statusPill(run.status)),
        h("div", { class: "subtitle" },
          h("span", { class: "mono" }, run.id), " · ", hostsOf(run).join(", ") || nodesOf(run).join(", "), " · started ",
          fmt.dateTime(run.started_at), run.ended_at ? ` · ended ${fmt.dateTime(run.ended_at)}` : "", tags.length ? " · " : "", tags)),
      h("div", { class: "head-actions" },
        h("a", { class: "btn", href: `#/compare?ids=${encodeURIComponent(run.id)}` }, "Compare with…")));
    const metrics = Object.entries(run.metrics || {});
    clear(ui.metrics);
    if (metrics.length) {
      ui.metrics.append(h("span", { class: "metrics-label" }, "Reported metrics"),
        ...metrics.map(([k, v]) => h("span", { class: "metric", dataset: { metric: k } }, h("span", { class: "metric-k" }, k), h("span", { class: "metric-v" }, fmt.metric(v)))));
    }
    if (Object.keys(run.config || {}).length) {
      clear(ui.details).append(h("details", { class: "card config" }, h("summary", null, "Run configuration"),
        h("pre", { class: "code" }, JSON.stringify(run.config, null, 2))));
    }
  }

  // --- which figure: the run's share of the node's CPU energy (by its processes' CPU time) or the whole node ---
  function shareShown() {
    return basis === "run-share" && energy && energy.run_share ? energy.run_share : null;
  }

  function toggleBasis() {
    basis = basis === "run-share" ? "node" : "run-share";
    renderBasis();
  }

  function renderBasis() {
    const share = shareShown();
    ui.basisBtn.hidden = !(energy && energy.run_share);
    ui.basisBtn.dataset.attribution = share ? "run-share" : "node";
    ui.basisBtn.textContent = share ? "Show the whole node" : "Show the run's share";
    ui.breakdownSection.dataset.attribution = share ? "run-share" : "node";
    renderCards();
    renderBreakdown();
  }

  function renderCards() {
    const share = shareShown();
    const total = share ? { ...energy.total, energy_j: share.energy_j, uncertainty_j: share.uncertainty_j,
      avg_power_w: energy.total.duration_s > 0 ? share.energy_j / energy.total.duration_s : null } : energy ? energy.total : run.totals;
    const running = run.status === "running";
    const dur = running ? Date.now() / 1000 - run.started_at : run.duration_s;
    const e = total ? total.energy_j : null;
    const card = (label, value, sub, attrs) => h("div", { class: "stat", ...attrs }, h("div", { class: "stat-label" }, label),
      h("div", { class: "stat-value" }, value), h("div", { class: "stat-sub" }, sub || "\u00a0"));
    clear(ui.cards).append(
      card(running ? "Energy so far" : "Energy", fmt.energyPm(e, total ? total.uncertainty_j : null), [fmt.kwh(e), energy ? [" · ", completeness(energy)] : null],
        { dataset: { stat: "energy", value: e ?? "", uncertainty: total?.uncertainty_j ?? "", complete: total?.complete ?? "" } }),
      card("Duration", fmt.duration(dur), running ? "running" : `${fmt.clock(run.started_at)} – ${fmt.clock(run.ended_at)}`, { dataset: { stat: "duration" } }),
      card("Average power", fmt.power(total ? total.avg_power_w : null), share ? "the run's share" : "all devices of the run", { dataset: { stat: "power" } }),
      card("Method", total && total.method ? methodBadge(total.method) : fmt.DASH, total && total.method === "estimated" ? "some device is estimated" : "how the total was obtained", { dataset: { stat: "method" } }),
    );
  }

  // --- devices and charts ------------------------------------------------------------------------------------
  async function loadDeviceNames() {
    await Promise.all(nodesOf(run).map(async (node) => {
      try {
        for (const d of await apiGet("devices", { node }, ctl.signal)) deviceInfo.set(d.id, d);
      } catch (err) {
        if (err.name !== "AbortError") console.debug("device names unavailable", err);
      }
    }));
    for (const [did, c] of charts) fillChartHead(did, c);
  }

  // About one bucket per device pixel of the plot: each carries its min and max, so no spike is lost.
  function maxPoints() {
    const w = (ui.devices.clientWidth || 1000) * (window.devicePixelRatio || 1);
    return Math.min(4000, Math.max(300, Math.round(w)));
  }

  async function fetchSamples(did, params) {
    return apiGet(`runs/${encodeURIComponent(id)}/samples`, { device: did, fields: CHART_FIELDS, ...params }, ctl.signal);
  }

  async function buildCharts() {
    const devices = ids(run);
    if (!devices.length) {
      ui.devices.append(panel("empty", "No devices", h("p", null, "This run owns no device on any node, so there is nothing to chart.")));
      ui.chartsSection.dataset.state = "ready";
      return;
    }
    const [lo, hi] = view.range;
    const mp = maxPoints();
    const results = await Promise.all(devices.map((did) => fetchSamples(did, { start: lo, end: hi, max_points: mp })
      .catch((err) => ({ error: err, device: did }))));
    if (ctl.signal.aborted) return;
    results.sort((a, b) => (KIND_ORDER[a.kind] ?? 9) - (KIND_ORDER[b.kind] ?? 9) || String(a.device).localeCompare(String(b.device)));
    timeline = new PhaseTimeline(ui.timeline, view, track);
    timeline.setRange(lo, hi);
    for (const res of results) {
      if (res.error) {
        ui.devices.append(h("div", { class: "device-chart card-inner" }, h("div", { class: "chart-title" }, res.device),
          h("p", { class: "error-text" }, res.error.detail || res.error.message)));
        continue;
      }
      if (res.kind === "host") continue;
      const canvas = h("div", { class: "chart-canvas" });
      const head = h("div", { class: "chart-head" });
      const card = h("div", { class: "device-chart", dataset: { device: res.device, kind: res.kind, source: res.source } }, head, canvas);
      ui.devices.append(card);
      const chart = new PowerChart(canvas, view, track, { color: KIND_COLOR[res.kind] || "#334155" });
      const c = { chart, card, head, info: res };
      charts.set(res.device, c);
      chart.setData(res, interval);
      fillChartHead(res.device, c);
      showEmpty(c);
    }
    if (results.some((r) => r.source === "simulated")) showSimulated();
    ui.chartsSection.dataset.state = "ready";
    updateRangeText();
  }

  // The "no samples" note follows the chart: a live run's first samples, or a zoom onto a gap, change it.
  function showEmpty(c) {
    const note = c.card.querySelector(".chart-empty");
    if (c.chart.points && note) note.remove();
    else if (!c.chart.points && !note) {
      c.card.querySelector(".chart-canvas").append(h("div", { class: "chart-empty" }, "No samples stored for this device over this time."));
    }
  }

  function fillChartHead(did, c) {
    const info = deviceInfo.get(did);
    const dev = energy && energy.devices ? energy.devices.find((d) => d.id === did) : null;
    const e = energy && energy.total.by_device ? energy.total.by_device[did] : null;
    const stored = c.info.stored_points;
    clear(c.head).append(
      h("div", { class: "chart-title" },
        h("span", { class: "kind-dot", style: { background: KIND_COLOR[c.info.kind] || "#334155" } }),
        h("strong", null, info ? info.name : did), h("span", { class: "muted" }, ` ${did} · ${KIND_LABEL[c.info.kind] || c.info.kind}`)),
      h("div", { class: "chart-badges" },
        sourceBadge(c.info.source),
        c.info.energy_counter ? badge("energy counter", "neutral", "the device has a hardware energy counter") : badge("power only", "neutral", "no energy counter: energy is integrated from power"),
        dev ? methodBadge(dev.method) : null,
        e !== null && e !== undefined ? h("span", { class: "chart-energy" }, fmt.energyPm(e, dev ? dev.uncertainty_j : null)) : null,
        h("span", { class: "muted small", title: "samples in the ledger over the shown time, and how many are drawn" },
          `${(stored ?? 0).toLocaleString("en-US")} samples${stored > c.chart.points ? `, ${c.chart.points.toLocaleString("en-US")} drawn (mean, min–max)` : ""}`)));
  }

  function showSimulated() {
    ui.simBanner.hidden = false;
    clear(ui.simBanner).append(h("strong", null, "Simulated devices. "),
      "Devices labelled SIMULATED play a synthetic power trace inside the daemon: their power and energy are not measurements of real hardware.");
  }

  // --- phases -------------------------------------------------------------------------------------------------
  async function loadPhases(range, sinceEnd) {
    const incremental = sinceEnd !== undefined;
    const params = { limit: PHASE_LIMIT };
    if (incremental) params.start = sinceEnd;
    else if (range) Object.assign(params, { start: range[0], end: range[1] });
    let res;
    try {
      res = await apiGet(`runs/${encodeURIComponent(id)}/phases`, params, ctl.signal);
    } catch (err) {
      if (err.name !== "AbortError") {
        ui.phaseNote.hidden = false;
        ui.phaseNote.textContent = `Phases could not be loaded: ${err.message}`;
      }
      return;
    }
    if (!incremental) {
      phaseKeys.clear();
      phasesTruncated = res.truncated;
    }
    const list = incremental ? track.phases.slice() : [];
    let added = false;
    for (const p of res.phases) {
      const k = phaseKey(p);
      if (phaseKeys.has(k)) continue;
      phaseKeys.add(k);
      list.push(p);
      added = true;
    }
    if (added || !incremental) {
      track.set(list);
      renderLegend();
    }
    ui.phaseNote.hidden = !phasesTruncated;
    ui.phaseNote.textContent = phasesTruncated
      ? `More than ${PHASE_LIMIT.toLocaleString("en-US")} phases in this span: the first ones are drawn. Zoom in to see every phase of a shorter span.`
      : "";
    if (!track.layout.lanes.length) {
      ui.timelineWrap.classList.add("empty");
      ui.timelineWrap.dataset.empty = "";
    } else {
      ui.timelineWrap.classList.remove("empty");
      delete ui.timelineWrap.dataset.empty;
    }
  }

  function renderLegend() {
    const { lanes } = track.layout;
    clear(ui.legend);
    if (!lanes.length) {
      ui.legend.append(h("span", { class: "muted small" }, "No phases recorded for this run (yet): markers sent by the trainer appear here as coloured bands."));
      return;
    }
    ui.legend.append(h("span", { class: "legend-label" }, "Shade:"));
    for (const name of lanes) {
      const count = track.layout.byName.get(name).start.length;
      const on = track.shaded.has(name);
      ui.legend.append(h("button", {
        class: `chip${on ? " on" : ""}`, type: "button", "aria-pressed": String(on), dataset: { phase: name },
        title: `${count} × ${name}; click to ${on ? "hide" : "shade"} on the power charts`,
        onclick: () => { track.toggle(name); renderLegend(); },
      }, h("span", { class: "swatch", style: { background: track.color(name) } }), name, h("span", { class: "chip-count" }, count.toLocaleString("en-US"))));
    }
  }

  // --- zoom ---------------------------------------------------------------------------------------------------
  async function zoomTo(range) {
    const full = span();
    let lo = full[0];
    let hi = full[1];
    if (range) {
      lo = Math.max(full[0], Math.min(range[0], range[1]));
      hi = Math.min(full[1], Math.max(range[0], range[1]));
      if (hi - lo < MIN_ZOOM_S) {
        const mid = (lo + hi) / 2;
        lo = mid - MIN_ZOOM_S / 2;
        hi = mid + MIN_ZOOM_S / 2;
      }
    }
    zoomed = Boolean(range);
    view.range = [lo, hi];
    const gen = ++generation;
    for (const c of charts.values()) c.chart.setRange(lo, hi);
    if (timeline) timeline.setRange(lo, hi);
    updateRangeText();
    ui.refining.hidden = false;
    const mp = maxPoints();
    try {
      const results = await Promise.all([...charts.keys()].map((did) => fetchSamples(did, { start: lo, end: hi, max_points: mp })));
      if (gen !== generation) return;
      for (const res of results) {
        const c = charts.get(res.device);
        c.info = { ...c.info, stored_points: res.stored_points };
        c.chart.setData(res, interval);
        fillChartHead(res.device, c);
        showEmpty(c);
      }
      if (phasesTruncated || !range) await loadPhases(range ? [lo, hi] : null);
    } catch (err) {
      if (err.name !== "AbortError") ui.readout.textContent = `Could not load finer samples: ${err.message}`;
    } finally {
      if (gen === generation) ui.refining.hidden = true;
    }
    updateLiveButton();
  }

  function updateRangeText() {
    const [lo, hi] = view.range;
    ui.rangeText.textContent = zoomed
      ? `Zoomed: ${fmt.clock(lo)} – ${fmt.clock(hi)} (${fmt.duration(hi - lo)})`
      : `Whole run: ${fmt.duration(hi - lo)}`;
    ui.resetBtn.hidden = !zoomed;
    ui.chartsSection.dataset.zoomed = String(zoomed);
  }

  function onCursor(t) {
    if (!ui) return;
    if (t === null || !Number.isFinite(t)) return;
    const parts = [h("span", { class: "mono" }, fmt.clock(t), `.${String(Math.floor((t % 1) * 1000)).padStart(3, "0")}`),
      h("span", { class: "muted" }, ` t+${fmt.duration(Math.max(0, t - run.started_at))}`)];
    const p = track.at(t);
    if (p) {
      parts.push(" · ", h("span", { class: "swatch", style: { background: track.color(p.name) } }), h("strong", null, p.name),
        p.step !== null && p.step !== undefined ? ` step ${p.step}` : "", h("span", { class: "muted" }, ` (${fmt.duration(p.end - p.start)})`));
    }
    for (const [did, c] of charts) {
      const v = c.chart.valueAt(t);
      if (!v || v.mean === null) continue;
      const info = deviceInfo.get(did);
      parts.push(" · ", h("span", { class: "kind-dot", style: { background: KIND_COLOR[c.info.kind] } }),
        `${info ? info.key : did} ${fmt.power(v.mean)}`);
    }
    clear(ui.readout).append(...parts);
  }

  // --- energy -------------------------------------------------------------------------------------------------
  async function loadEnergy() {
    try {
      energy = await apiGet(`runs/${encodeURIComponent(id)}/energy`, null, ctl.signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      clear(ui.breakdown).append(errorPanel(err, loadEnergy));
      clear(ui.provenance);
      return;
    }
    run = energy.run;
    if (basis === null) basis = energy.run_share ? "run-share" : "node";
    renderBasis();
    renderProvenance();
    renderWarnings();
    for (const [did, c] of charts) fillChartHead(did, c);
    if (energy.simulated) showSimulated();
  }

  function renderBreakdown() {
    clear(ui.breakdown).append(...phaseTable({
      energy, basis: basisOf(energy, shareShown()), track, deviceInfo, truncated: phasesTruncated,
    }));
  }

  function renderProvenance() {
    clear(ui.provenance).append(...deviceTable(energy, deviceInfo));
  }

  function renderWarnings() {
    clear(ui.warnings).append(...warnings(energy));
  }

  // --- live ---------------------------------------------------------------------------------------------------
  function goLive() {
    stopLive = every(LIVE_MS, liveTick);
    stopEnergy = every(ENERGY_MS, energyTick);
    ui.chartsSection.dataset.live = "true";
    updateLiveButton();
  }

  function endLive() {
    if (stopLive) stopLive();
    if (stopEnergy) stopEnergy();
    stopLive = stopEnergy = null;
    ui.chartsSection.dataset.live = "false";
    updateLiveButton();
  }

  function updateLiveButton() {
    const live = Boolean(stopLive);
    ui.liveBtn.hidden = !live;
    if (!live) return;
    clear(ui.liveBtn);
    if (zoomed) ui.liveBtn.append("Follow live");
    else ui.liveBtn.append(h("span", { class: "pulse" }), "Live");
    ui.liveBtn.title = zoomed ? "Go back to the whole run and follow the newest samples" : "Following the newest samples";
  }

  function toggleLive() {
    if (zoomed) zoomTo(null);
  }

  async function liveTick() {
    if (zoomed) return; // the user is looking at a past span: keep it still
    const now = Date.now() / 1000;
    view.range = [run.started_at, Math.max(now, run.started_at + MIN_ZOOM_S)];
    let most = 0;
    const ends = [];
    try {
      await Promise.all([...charts.entries()].map(async ([did, c]) => {
        const last = c.chart.lastT();
        const res = await fetchSamples(did, { start: last ?? run.started_at, max_points: 5000 });
        ends.push(res.end);
        if (zoomed) return;
        const added = c.chart.append(res, interval);
        if (added) {
          c.info = { ...c.info, stored_points: (c.info.stored_points || 0) + added };
          fillChartHead(did, c);
          showEmpty(c);
        }
        most = Math.max(most, c.chart.points);
      }));
    } catch (err) {
      // A start after the run's end: it stopped since the last look.
      if (err instanceof ApiError && err.status === 422) {
        await energyTick();
        return;
      }
      throw err;
    }
    // The daemon answers up to now while the run goes on, and up to its end once it stopped: an end that did
    // not move since the last look says the run is over, without asking for its (costly) live totals.
    const end = Math.max(...ends);
    if (ends.length && end === liveEnd) {
      await energyTick();
      return;
    }
    liveEnd = end;
    if (timeline) timeline.setRange(view.range[0], view.range[1]);
    for (const c of charts.values()) c.chart.setRange(view.range[0], view.range[1]);
    const lastEnd = track.phases.reduce((m, p) => Math.max(m, p.end), run.started_at);
    await loadPhases(null, lastEnd - 30);
    updateRangeText();
    renderCards();
    if (most > LIVE_POINT_CAP) await zoomTo(null);
  }

  async function energyTick() {
    if (!stopLive) return;
    const before = run.status;
    await loadEnergy();
    renderHeader();
    if (before === "running" && run.status !== "running") {
      endLive();
      await zoomTo(null);
      await loadEnergy();
    }
  }

  return () => {
    ctl.abort();
    if (stopLive) stopLive();
    if (stopEnergy) stopEnergy();
    for (const c of charts.values()) c.chart.destroy();
    if (timeline) timeline.destroy();
  };
}
