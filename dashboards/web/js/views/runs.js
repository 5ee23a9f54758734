// Runs list: what ran, where, for how long and at what energy cost; filters by name, tag and status, and
// refreshes itself every few seconds while any listed run is still running.

import { apiGet } from "../api.js";
import { badge, clear, errorPanel, every, h, loading, panel, statusPill } from "../dom.js";
import * as fmt from "../format.js";

const LIVE_MS = 2000;
const IDLE_MS = 10000;
const PAGE = 100;

export function hostsOf(run) {
  const hosts = [];
  for (const m of run.members || []) {
    const name = m.host || m.node;
    if (name && !hosts.includes(name)) hosts.push(name);
  }
  return hosts;
}

function tagChips(tags) {
  return Object.entries(tags || {}).map(([k, v]) => h("span", { class: "tag" }, v === null || v === "" ? k : `${k}: ${v}`));
}

export function mount(el, { query, replaceQuery }) {
  const state = {
    name: query.name || "", tag: query.tag || "", status: query.status || "", limit: PAGE,
    selected: new Set(), runs: [], loaded: false, anyRunning: false,
  };
  let inflight = null;

  const nameInput = h("input", { type: "search", placeholder: "Filter by name", value: state.name, "aria-label": "Filter by name", name: "name" });
  const tagInput = h("input", { type: "search", placeholder: "Tag (key or key:value)", value: state.tag, "aria-label": "Filter by tag", name: "tag" });
  const statusSelect = h("select", { "aria-label": "Filter by status", name: "status" },
    ["", "running", "completed", "failed"].map((s) => h("option", { value: s, selected: s === state.status }, s || "Any status")));
  const compareBtn = h("a", { class: "btn btn-primary disabled", href: "#/compare", "aria-disabled": "true" }, "Compare selected");
  const liveNote = h("span", { class: "live-note", hidden: true }, h("span", { class: "pulse" }), "live");
  const body = h("div", { class: "runs-body" }, loading("Loading runs…"));

  el.append(
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Runs"), h("p", { class: "subtitle" }, "Energy of every training run this daemon has measured.")),
      h("div", { class: "head-actions" }, liveNote, compareBtn)),
    h("div", { class: "toolbar" }, nameInput, tagInput, statusSelect),
    body,
  );

  function updateCompare() {
    const ids = [...state.selected];
    compareBtn.textContent = ids.length ? `Compare selected (${ids.length})` : "Compare selected";
    const ok = ids.length >= 2;
    compareBtn.classList.toggle("disabled", !ok);
    compareBtn.setAttribute("aria-disabled", String(!ok));
    compareBtn.href = ok ? `#/compare?ids=${ids.map(encodeURIComponent).join(",")}` : "#/compare";
    compareBtn.title = ok ? "" : "Tick two or more runs";
  }

  function filtersActive() {
    return Boolean(state.name || state.tag || state.status);
  }

  function row(r) {
    const t = r.totals || null;
    const running = r.status === "running";
    const dur = running ? Date.now() / 1000 - r.started_at : r.duration_s;
    const href = `#/run/${encodeURIComponent(r.id)}`;
    const check = h("input", {
      type: "checkbox", "aria-label": `select ${r.name} for comparison`, checked: state.selected.has(r.id),
      onchange: (e) => {
        if (e.target.checked) state.selected.add(r.id);
        else state.selected.delete(r.id);
        updateCompare();
      },
    });
    const e = t ? t.energy_j : null;
    return h("tr", { dataset: { runId: r.id, status: r.status, method: t?.method ?? "" } },
      h("td", { class: "col-check" }, check),
      h("td", { class: "col-name" }, h("a", { href, class: "run-link" }, r.name), h("div", { class: "sub mono" }, r.id)),
      h("td", null, statusPill(r.status)),
      h("td", null, hostsOf(r).join(", ") || fmt.DASH),
      h("td", { class: "nowrap" }, fmt.dateTime(r.started_at)),
      h("td", { class: "num" }, fmt.duration(dur), running ? h("div", { class: "sub" }, "so far") : null),
      h("td", { class: "num", dataset: { energyJ: e ?? "", uncertainty: t?.uncertainty_j ?? "" } }, fmt.energyPm(e, t?.uncertainty_j),
        h("div", { class: "sub" }, fmt.kwh(e), t?.complete === false ? [" · ", badge("incomplete", "warn", "the total does not cover the whole run")] : null,
          t?.method === "estimated" ? [" · ", badge("estimated", "estimate", "rests on at least one estimated device (e.g. CPU power from utilisation and TDP): not a measurement")] : null)),
      h("td", { class: "num" }, fmt.power(t ? t.avg_power_w : null)),
      h("td", { class: "col-tags" }, tagChips(r.tags)),
    );
  }

  function render() {
    clear(body);
    if (!state.runs.length) {
      if (filtersActive()) {
        body.append(panel("empty", "No runs match these filters",
          h("p", null, "Nothing in the ledger matches the name, tag or status given."),
          h("button", { class: "btn", onclick: resetFilters }, "Clear filters")));
      } else {
        body.append(panel("empty", "No runs yet",
          h("p", null, "The daemon is sampling this node, but no training run has registered with it. ",
            "Runs appear here as soon as a job registers, for example with the trainer's client:"),
          h("pre", { class: "code" }, "python -m trainer distill …\n\n# or by hand\ncurl -X POST localhost:8765/api/v1/runs -H 'Content-Type: application/json' \\\n     -d '{\"name\": \"my-run\"}'"),
          h("p", { class: "muted" }, "Live power of this node's devices is in the ", h("a", { href: "#/node" }, "Node"), " view.")));
      }
      return;
    }
    const table = h("table", { class: "table runs-table", dataset: { count: state.runs.length } },
      h("thead", null, h("tr", null,
        h("th", { class: "col-check" }, ""), h("th", null, "Name"), h("th", null, "Status"), h("th", null, "Host"),
        h("th", null, "Started"), h("th", { class: "num" }, "Duration"), h("th", { class: "num" }, "Energy"),
        h("th", { class: "num" }, "Avg power"), h("th", null, "Tags"))),
      h("tbody", null, state.runs.map(row)));
    body.append(h("div", { class: "card table-card" }, table));
    if (state.runs.length >= state.limit) {
      body.append(h("div", { class: "more" }, h("button", {
        class: "btn", onclick: () => { state.limit += PAGE; refresh(); },
      }, `Show ${PAGE} more`)));
    }
  }

  async function refresh() {
    if (inflight) inflight.abort();
    const ctl = new AbortController();
    inflight = ctl;
    try {
      const runs = await apiGet("runs", { name: state.name, tag: state.tag, status: state.status, limit: state.limit }, ctl.signal);
      if (ctl.signal.aborted) return;
      state.runs = runs;
      state.loaded = true;
      state.anyRunning = runs.some((r) => r.status === "running");
      liveNote.hidden = !state.anyRunning;
      render();
    } catch (err) {
      if (err.name === "AbortError") return;
      if (!state.loaded) {
        clear(body).append(errorPanel(err, refresh));
      } else {
        throw err; // keep showing the last list; the banner says the daemon is away
      }
    } finally {
      if (inflight === ctl) inflight = null;
    }
  }

  function resetFilters() {
    state.name = state.tag = state.status = "";
    nameInput.value = tagInput.value = "";
    statusSelect.value = "";
    onFilter();
  }

  let debounce = null;
  function onFilter() {
    state.name = nameInput.value.trim();
    state.tag = tagInput.value.trim();
    state.status = statusSelect.value;
    replaceQuery("runs", { name: state.name, tag: state.tag, status: state.status });
    clearTimeout(debounce);
    debounce = setTimeout(refresh, 200);
  }
  nameInput.addEventListener("input", onFilter);
  tagInput.addEventListener("input", onFilter);
  statusSelect.addEventListener("change", onFilter);

  updateCompare();
  const stop = every(() => (state.anyRunning ? LIVE_MS : IDLE_MS), refresh, { immediate: true });
  return () => {
    stop();
    clearTimeout(debounce);
    if (inflight) inflight.abort();
  };
}

