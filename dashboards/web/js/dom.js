// A tiny element builder (text is always set as text, never parsed as HTML) and the shared state panels.

import { ApiError, Unreachable } from "./api.js";

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function badge(text, kind = "neutral", title) {
  return h("span", { class: `badge badge-${kind}`, title }, text);
}

const SOURCE_HELP = {
  nvml: "measured by NVML on the GPU",
  rapl: "measured by the CPU's RAPL energy counters",
  psutil: "host counters from psutil (no power)",
  estimate: "estimated from utilisation and the CPU's TDP: not a measurement",
  simulated: "a simulated device: its figures are not measurements",
};

export function sourceBadge(source) {
  const kind = { nvml: "measured", rapl: "measured", simulated: "simulated", estimate: "estimate" }[source] || "neutral";
  return badge(source === "simulated" ? "SIMULATED" : source, kind, SOURCE_HELP[source] || source);
}

const METHOD_HELP = {
  counter: "difference of the hardware energy counter, interpolated at the boundaries",
  integrated: "trapezoid integral of sampled power",
  estimated: "rests on at least one estimated device",
  attributed: "statistical attribution over repeated short phases",
};

export function methodBadge(method) {
  if (!method) return badge("no data", "neutral");
  return badge(method, `method-${method}`, METHOD_HELP[method] || method);
}

export function statusPill(status) {
  return h("span", { class: `status status-${status}`, dataset: { status } }, status);
}

/** A full-width message: an empty state (kind "empty") or an error (kind "error"). */
export function panel(kind, title, ...body) {
  return h("section", { class: `state state-${kind}`, role: kind === "error" ? "alert" : "status", dataset: { state: kind } },
    h("h2", null, title), ...body);
}

/** Turns any failure of a view's loading into a panel that says what happened and what to do. */
export function errorPanel(err, retry) {
  const again = retry ? h("button", { class: "btn", onclick: retry }, "Retry") : null;
  if (err instanceof Unreachable) {
    const p = panel("error", "Daemon unreachable",
      h("p", null, `The dashboard cannot reach the joulemeter daemon at ${location.origin}. `,
        "Is it still running? Start it with ", h("code", null, "python -m telemetry_service serve"), "."),
      h("p", { class: "muted" }, "The page loads again by itself once the daemon answers."), again);
    p.dataset.unreachable = "";
    return p;
  }
  if (err instanceof ApiError && err.status === 401) {
    return panel("error", "Access token required",
      h("p", null, "This daemon asks for a bearer token. Set it with the key button in the top bar."), again);
  }
  if (err instanceof ApiError) {
    return panel("error", `Error ${err.status}`, h("p", null, err.detail), again);
  }
  console.error(err);
  return panel("error", "Something went wrong", h("p", null, String(err && err.message ? err.message : err)), again);
}

export function loading(text = "Loading…") {
  return h("div", { class: "loading", dataset: { state: "loading" } }, h("span", { class: "spinner" }), text);
}

/**
 * Repeats `fn` every `ms` (a number, or a function read after each call) until the returned stop function is
 * called; each call finishes before the next is scheduled. With `immediate`, the first call is made at once.
 */
export function every(ms, fn, { immediate = false } = {}) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } catch (err) {
      if (err.name !== "AbortError") console.debug("poll failed:", err);
    }
    if (!stopped) timer = setTimeout(tick, typeof ms === "function" ? ms() : ms);
  };
  timer = setTimeout(tick, immediate ? 0 : typeof ms === "function" ? ms() : ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
