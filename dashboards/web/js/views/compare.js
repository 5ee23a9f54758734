// Runs side by side (e.g. teacher, baseline, distilled): energy (a distilled student's with its teacher's
// training, by default), energy per unit of work, what each job reported about itself (accuracy, F1…),
// energy per phase name, and an energy-versus-metric scatter with its Pareto front.

import { ApiError, apiGet } from "../api.js";
import { badge, clear, errorPanel, h, loading, methodBadge, panel, statusPill, svg } from "../dom.js";
import * as fmt from "../format.js";
import { colorFor } from "../phases.js";
import { figures, findTeachers, isDistilled, referenceOf } from "./compare_work.js";

// The scatter's x axis: what each run's energy is divided by.
const X_AXES = {
  total: { label: "total energy", of: (f) => f.total.energy_j },
  per_sample: { label: "training energy per sample", of: (f) => f.perSample, unit: "J/sample" },
  per_1k: { label: "energy per 1,000 inferences", of: (f) => f.per1k, unit: "J/1k inferences" },
};
const PREFERRED = ["accuracy", "acc", "f1", "eval_accuracy", "eval_f1", "exact_match"];

function numericMetricKeys(runs) {
  const keys = new Set();
  for (const r of runs) for (const [k, v] of Object.entries(r.metrics || {})) if (typeof v === "number" && Number.isFinite(v)) keys.add(k);
  return [...keys].sort((a, b) => {
    const ia = PREFERRED.indexOf(a.toLowerCase());
    const ib = PREFERRED.indexOf(b.toLowerCase());
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
}

/** Round tick values for an axis over [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

export function mount(el, { query, replaceQuery }) {
  const ctl = new AbortController();
  const selected = (query.ids || "").split(",").map((s) => s.trim()).filter(Boolean);
  let metricKey = query.metric || null;
  let withTeacher = query.teacher !== "0";
  let refId = query.base || null;
  let xKey = X_AXES[query.x] ? query.x : "total";
  let allRuns = [];
  let loaded = []; // {id, run, energy, error}
  let teachers = new Map(); // distilled run id -> findTeachers' answer

  const picker = h("div", { class: "picker" });
  const body = h("div", { class: "compare-body" });
  el.append(
    h("div", { class: "page-head" }, h("div", null, h("h1", null, "Compare runs"),
      h("p", { class: "subtitle" }, "Energy and reported metrics side by side, e.g. teacher, baseline and distilled student."))),
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", null, "Runs to compare")), picker),
    body,
  );

  function saveQuery() {
    replaceQuery("compare", { ids: selected.join(","), metric: metricKey || "", teacher: withTeacher ? "" : "0",
      base: refId || "", x: xKey === "total" ? "" : xKey });
  }

  function setSelection(ids) {
    selected.splice(0, selected.length, ...ids);
    saveQuery();
    renderPicker();
    loadSelected();
  }

  function renderPicker() {
    const chips = selected.map((id, i) => {
      const item = loaded.find((x) => x.id === id);
      const name = item && item.run ? item.run.name : (allRuns.find((r) => r.id === id) || {}).name || id;
      return h("span", { class: `chip on${item && item.error ? " chip-error" : ""}`, dataset: { runId: id } },
        h("span", { class: "swatch", style: { background: colorFor(i) } }), name,
        h("button", { class: "chip-x", type: "button", "aria-label": `remove ${name}`, onclick: () => setSelection(selected.filter((x) => x !== id)) }, "×"));
    });
    const options = allRuns.filter((r) => !selected.includes(r.id));
    const select = h("select", { "aria-label": "Add a run", class: "add-run" },
      h("option", { value: "" }, options.length ? "Add a run…" : "No other runs"),
      options.map((r) => h("option", { value: r.id }, `${r.name} · ${r.status} · ${fmt.dateTime(r.started_at)}${r.totals ? ` · ${fmt.energyPm(r.totals.energy_j, r.totals.uncertainty_j)}` : ""}`)));
    select.addEventListener("change", () => { if (select.value) setSelection([...selected, select.value]); });
    clear(picker).append(h("div", { class: "chips" }, chips.length ? chips : h("span", { class: "muted" }, "No run picked yet.")), select);
  }

  async function loadRunList() {
    try {
      allRuns = await apiGet("runs", { limit: 500 }, ctl.signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      allRuns = [];
      if (!selected.length) clear(body).append(errorPanel(err, () => { loadRunList(); }));
    }
    renderPicker();
  }

  async function loadSelected() {
    if (!selected.length) {
      clear(body).append(panel("empty", "Pick runs to compare",
        h("p", null, "Add two or more runs above, or tick them in the ", h("a", { href: "#/runs" }, "runs list"), " and press Compare.")));
      loaded = [];
      return;
    }
    clear(body).append(loading("Loading runs…"));
    const ids = [...selected];
    const got = await Promise.all(ids.map(async (id) => {
      try {
        const energy = await apiGet(`runs/${encodeURIComponent(id)}/energy`, null, ctl.signal);
        return { id, run: energy.run, energy };
      } catch (err) {
        return { id, error: err };
      }
    }));
    if (ctl.signal.aborted || ids.join() !== selected.join()) return;
    try {
      teachers = await findTeachers(got.filter((x) => !x.error), ctl.signal);
    } catch (err) {
      if (err.name === "AbortError") return;
      teachers = new Map(); // the totals still compare, without the teachers' share
    }
    if (ctl.signal.aborted || ids.join() !== selected.join()) return;
    loaded = got;
    renderPicker();
    render();
  }

  function render() {
    clear(body);
    const unreachable = loaded.find((x) => x.error && !(x.error instanceof ApiError));
    if (unreachable) {
      body.append(errorPanel(unreachable.error, loadSelected));
      return;
    }
    for (const x of loaded.filter((y) => y.error)) {
      body.append(h("div", { class: "callout callout-warn", role: "alert" }, h("strong", null, "Run not found: "),
        h("code", null, x.id), ` (${x.error.detail || x.error.message}). It is left out below.`));
    }
    const ok = loaded.filter((x) => !x.error);
    if (!ok.length) return;
    if (ok.length < 2) {
      body.append(panel("empty", "Add another run", h("p", null, "Comparing needs at least two runs: add one above.")));
    }
    const runs = ok.map((x) => ({ ...x.run, energy: x.energy, fig: figures(x.run, x.energy, teachers.get(x.id), withTeacher) }));
    const keys = numericMetricKeys(runs);
    const allMetricKeys = [...new Set(runs.flatMap((r) => Object.keys(r.metrics || {})))].sort((a, b) => keys.indexOf(a) - keys.indexOf(b));
    if (!metricKey || !keys.includes(metricKey)) metricKey = keys[0] || null;
    body.append(...teacherNotes(runs), table(runs, allMetricKeys), scatterCard(runs, keys));
  }

  // The option to count the teacher's training, and what is known about each distilled run's teacher.
  function teacherNotes(runs) {
    const distilled = runs.filter(isDistilled);
    if (!distilled.length) return [];
    const box = h("input", { type: "checkbox", name: "with-teacher", checked: withTeacher,
      onchange: () => { withTeacher = box.checked; saveQuery(); render(); } });
    const notes = distilled.map((r) => {
      const t = teachers.get(r.id) || { missing: "its teacher could not be looked up" };
      if (t.missing) return h("li", { dataset: { teacherOf: r.id, found: "false" } }, h("strong", null, r.name), `: distilled, but ${t.missing}; its own energy is shown.`);
      return h("li", { dataset: { teacherOf: r.id, found: "true", teacherId: t.teacher.id } }, h("strong", null, r.name), " was distilled from ",
        h("a", { href: `#/run/${encodeURIComponent(t.teacher.id)}` }, t.teacher.run.name), t.training
          ? `, whose training (its epochs) took ${fmt.energyPm(t.training.energy_j, t.training.uncertainty_j)}.`
          : ", which was not trained in this comparison (no epoch phases): there is no training of it to add.");
    });
    return [h("section", { class: "card teacher-card" },
      h("label", { class: "check-field" }, box, " Count the teacher's training in each distilled student's energy"),
      h("ul", { class: "teacher-notes small" }, notes))];
  }

  function table(runs, metricKeys) {
    const ref = referenceOf(runs, refId);
    const base = ref.fig.total.energy_j;
    const minE = Math.min(...runs.map((r) => r.fig.total.energy_j));
    const phaseNames = [...new Set(runs.flatMap((r) => r.energy.phases.map((p) => p.name)))];
    const row = (label, cells, attrs) => h("tr", attrs, h("th", { scope: "row" }, label), cells);
    const head = h("tr", null, h("th", null, ""), runs.map((r, i) => h("th", { class: "run-col", dataset: { runId: r.id } },
      h("span", { class: "swatch", style: { background: colorFor(i) } }),
      h("a", { href: `#/run/${encodeURIComponent(r.id)}` }, r.name), h("div", { class: "sub mono" }, r.id))));
    const rows = [
      row("Status", runs.map((r) => h("td", null, statusPill(r.status)))),
      row("Started", runs.map((r) => h("td", null, fmt.dateTime(r.started_at)))),
      row("Duration", runs.map((r) => h("td", { class: "num" }, fmt.duration(r.energy.total.duration_s))), { dataset: { row: "duration" } }),
      row("Energy", runs.map((r) => {
        const { energy_j: e, uncertainty_j: u } = r.fig.total;
        const extra = r.fig.teacherTraining;
        return h("td", { class: `num${runs.length > 1 && e === minE ? " best" : ""}`, dataset: { value: e, uncertainty: u ?? "", own: r.fig.own.energy_j } },
          h("strong", null, fmt.energyPm(e, u)), h("div", { class: "sub" }, fmt.kwh(e),
            r.energy.total.complete === false ? [" · ", badge("incomplete", "warn", "the total does not cover the whole run")] : null),
          extra ? h("div", { class: "sub", dataset: { teacherJ: extra.energy_j } }, `own ${fmt.energy(r.fig.own.energy_j)} + teacher's training ${fmt.energy(extra.energy_j)}`) : null);
      }), { dataset: { row: "energy" } }),
      row(h("label", null, "vs ", refSelect(runs, ref)), runs.map((r) => {
        if (r.id === ref.id) return h("td", { class: "num muted", dataset: { reference: "" } }, "reference");
        if (!(base > 0)) return h("td", { class: "num muted" }, fmt.DASH);
        const d = r.fig.total.energy_j / base - 1;
        return h("td", { class: `num ${d < 0 ? "good" : "bad"}` }, `${d > 0 ? "+" : ""}${(d * 100).toFixed(1)} %`);
      }), { dataset: { row: "relative" } }),
      row("Training, per sample", runs.map((r) => workCell(r.fig.perSample, r.fig.perSampleU, "J",
        "the epochs' energy over metrics.train_samples", r.fig.teacherTraining)), { dataset: { row: "per-sample" } }),
      row("Inference, per 1,000", runs.map((r) => workCell(r.fig.per1k, r.fig.per1kU, "J",
        "the inference phases' energy over metrics.eval_samples × inference_passes")), { dataset: { row: "per-1k" } }),
      row("Average power", runs.map((r) => h("td", { class: "num" }, fmt.power(r.energy.total.avg_power_w)))),
      row("Method", runs.map((r) => h("td", null, methodBadge(r.energy.total.method), r.energy.simulated ? " " : null,
        r.energy.simulated ? h("span", { class: "badge badge-simulated" }, "SIMULATED") : null))),
    ];
    const section = (title) => h("tr", { class: "section-row" }, h("th", { colspan: runs.length + 1 }, title));
    rows.push(section("Reported metrics"));
    if (!metricKeys.length) {
      rows.push(h("tr", null, h("td", { colspan: runs.length + 1, class: "muted" },
        "None of these runs reported metrics. The trainer reports them when it stops a run (POST /api/v1/runs/{id}/stop with \"metrics\").")));
    }
    for (const k of metricKeys) {
      rows.push(row(k, runs.map((r) => {
        const v = (r.metrics || {})[k];
        return h("td", { class: "num", dataset: { metric: k, value: v ?? "" } }, fmt.metric(v));
      }), { dataset: { row: `metric:${k}` } }));
    }
    if (phaseNames.length) {
      rows.push(section("Energy by phase"));
      for (const name of phaseNames) {
        rows.push(row(name, runs.map((r) => {
          const p = r.energy.phases.find((x) => x.name === name);
          return h("td", { class: "num", dataset: { value: p ? p.energy_j : "", uncertainty: p?.uncertainty_j ?? "" } }, p ? fmt.energyPm(p.energy_j, p.uncertainty_j) : fmt.DASH,
            p ? h("div", { class: "sub" }, `${p.count.toLocaleString("en-US")} × · ${fmt.duration(p.duration_s)}`) : null);
        }), { dataset: { row: `phase:${name}` } }));
      }
    }
    return h("section", { class: "card table-card" }, h("table", { class: "table compare-table" }, h("thead", null, head), h("tbody", null, rows)));
  }

  function refSelect(runs, ref) {
    const select = h("select", { class: "ref-select", "aria-label": "Reference run" },
      runs.map((r) => h("option", { value: r.id, selected: r.id === ref.id }, r.name)));
    select.addEventListener("change", () => { refId = select.value; saveQuery(); render(); });
    return select;
  }

  function workCell(v, u, unit, how, withTeacherPart) {
    if (v === null) return h("td", { class: "num muted", title: "the run's metrics do not give the count of work" }, fmt.DASH);
    const text = u != null ? fmt.energyPm(v, u) : fmt.energy(v);
    return h("td", { class: "num", title: how, dataset: { value: v } }, text,
      withTeacherPart ? h("div", { class: "sub" }, "with the teacher's training") : null);
  }

  function scatterCard(runs, keys) {
    const card = h("section", { class: "card scatter-card" });
    const headRow = h("div", { class: "card-head" }, h("h2", null, "Energy vs metric"));
    card.append(headRow);
    if (!keys.length) {
      card.append(panel("empty", "No metrics to plot", h("p", null, "The scatter needs runs that reported a numeric metric such as accuracy or F1.")));
      return card;
    }
    const select = h("select", { "aria-label": "Metric", class: "metric-select" }, keys.map((k) => h("option", { value: k, selected: k === metricKey }, k)));
    select.addEventListener("change", () => {
      metricKey = select.value;
      saveQuery();
      render();
    });
    const xSelect = h("select", { "aria-label": "Energy axis", class: "x-select" },
      Object.entries(X_AXES).map(([k, a]) => h("option", { value: k, selected: k === xKey }, a.label)));
    xSelect.addEventListener("change", () => {
      xKey = xSelect.value;
      saveQuery();
      render();
    });
    headRow.append(h("div", { class: "chart-tools" }, h("label", { class: "inline-field" }, "Energy ", xSelect),
      h("label", { class: "inline-field" }, "Metric ", select)));
    card.append(scatter(runs, metricKey));
    return card;
  }

  function scatter(runs, key) {
    const W = 760;
    const H = 340;
    const m = { l: 70, r: 24, t: 16, b: 46 };
    const axis = X_AXES[xKey];
    // kWh once runs are large enough for it to read well, joules (or kJ) for short ones; per-work figures in J.
    const maxJ = Math.max(...runs.map((r) => axis.of(r.fig) || 0));
    const [unit, scale] = axis.unit ? [axis.unit, 1] : maxJ >= 3.6e4 ? ["kWh", 3.6e6] : maxJ >= 1e3 ? ["kJ", 1e3] : ["J", 1];
    const pts = runs.map((r, i) => ({ r, i, x: axis.of(r.fig) / scale, y: (r.metrics || {})[key] }))
      .filter((p) => typeof p.y === "number" && Number.isFinite(p.y) && Number.isFinite(p.x));
    if (!pts.length) return panel("empty", `No run gives both ${key} and ${axis.label}`, h("p", null, "Pick another metric or energy axis."));
    const pad = (lo, hi) => {
      const d = hi - lo || Math.abs(hi) * 0.1 || 1;
      return [lo - d * 0.12, hi + d * 0.12];
    };
    let [x0, x1] = pad(Math.min(...pts.map((p) => p.x)), Math.max(...pts.map((p) => p.x)));
    const [y0, y1] = pad(Math.min(...pts.map((p) => p.y)), Math.max(...pts.map((p) => p.y)));
    x0 = Math.max(0, x0);
    const sx = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
    const sy = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
    const xt = niceTicks(x0, x1);
    const yt = niceTicks(y0, y1);
    // Pareto front: no other run has both less energy and a better metric (higher is taken as better).
    const sorted = [...pts].sort((a, b) => a.x - b.x || b.y - a.y);
    const front = [];
    let best = -Infinity;
    for (const p of sorted) if (p.y > best) { front.push(p); best = p.y; }
    const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "scatter", role: "img", "aria-label": `energy versus ${key}` },
      xt.map((v) => svg("g", null, svg("line", { x1: sx(v), x2: sx(v), y1: m.t, y2: H - m.b, class: "grid" }),
        svg("text", { x: sx(v), y: H - m.b + 16, class: "tick", "text-anchor": "middle" }, fmt.sig(v)))),
      yt.map((v) => svg("g", null, svg("line", { x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v), class: "grid" }),
        svg("text", { x: m.l - 8, y: sy(v) + 4, class: "tick", "text-anchor": "end" }, fmt.sig(v, 4)))),
      svg("text", { x: (m.l + W - m.r) / 2, y: H - 8, class: "axis-label", "text-anchor": "middle" }, `${axis.label} (${unit})`),
      svg("text", { x: 16, y: (m.t + H - m.b) / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 16 ${(m.t + H - m.b) / 2})` }, key),
      front.length > 1 ? svg("polyline", { points: front.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" "), class: "front" }) : null,
      pts.map((p) => svg("g", { class: "pt", "data-run-id": p.r.id },
        svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 6, fill: colorFor(p.i) }),
        sx(p.x) > W * 0.7
          ? svg("text", { x: sx(p.x) - 10, y: sy(p.y) - 8, class: "pt-label", "text-anchor": "end" }, p.r.name)
          : svg("text", { x: sx(p.x) + 10, y: sy(p.y) - 8, class: "pt-label" }, p.r.name),
        svg("title", null, `${p.r.name}: ${axis.unit ? `${fmt.sig(p.x)} ${unit}` : fmt.energy(p.x * scale)}${p.r.fig.teacherTraining ? " with the teacher's training" : ""}, ${key} = ${fmt.metric(p.y)}`))),
    );
    return h("div", { class: "scatter-wrap", dataset: { points: pts.length } }, plot,
      h("p", { class: "muted small" }, front.length > 1 ? "Dashed: the Pareto front (no other run is both cheaper and better, taking higher as better)." : ""));
  }

  renderPicker();
  loadRunList();
  loadSelected();
  return () => ctl.abort();
}
