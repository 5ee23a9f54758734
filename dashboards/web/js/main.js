// Shell of the dashboard: hash routes (#/runs, #/run/<id>, #/compare?ids=a,b, #/node), the daemon's
// connection state in the top bar, and the token prompt that any 401 opens.

import { getToken, health, onConnection, setToken, setTokenPrompt } from "./api.js";
import { clear, every, h } from "./dom.js";
import * as runs from "./views/runs.js";
import * as run from "./views/run.js";
import * as compare from "./views/compare.js";
import * as node from "./views/node.js";

const view = document.getElementById("view");
let unmount = null;

/** Splits "#/run/abc?x=1" into ["run", "abc"] and {x: "1"}. */
export function parseHash(hash) {
  const raw = (hash || "").replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const query = Object.fromEntries(new URLSearchParams(q >= 0 ? raw.slice(q + 1) : ""));
  const parts = path.split("/").filter(Boolean).map((p) => decodeURIComponent(p));
  return { parts, query };
}

/** Rewrites the hash's query without re-rendering the view (filters, selections). */
export function replaceQuery(route, query) {
  const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v != null)).toString();
  history.replaceState(null, "", `#/${route}${qs ? `?${qs}` : ""}`);
}

function route() {
  if (unmount) {
    unmount();
    unmount = null;
  }
  clear(view);
  window.scrollTo(0, 0);
  const { parts, query } = parseHash(location.hash);
  const name = parts[0] || "runs";
  for (const a of document.querySelectorAll(".nav a")) {
    a.classList.toggle("active", a.dataset.route === (name === "run" ? "runs" : name));
  }
  const ctx = { query, replaceQuery };
  let mounted;
  if (name === "runs") mounted = runs.mount(view, ctx);
  else if (name === "run" && parts[1]) mounted = run.mount(view, { ...ctx, id: parts.slice(1).join("/") });
  else if (name === "compare") mounted = compare.mount(view, ctx);
  else if (name === "node") mounted = node.mount(view, ctx);
  else {
    view.append(h("section", { class: "state state-error", role: "alert", dataset: { state: "error" } },
      h("h2", null, "Page not found"),
      h("p", null, "There is no view at ", h("code", null, location.hash), ". ", h("a", { href: "#/runs" }, "Go to runs"), ".")));
  }
  unmount = mounted || null;
  document.title = `joulemeter · ${name}`;
}

// --- connection indicator ------------------------------------------------------------------------------------
const conn = document.getElementById("conn");
const connText = conn.querySelector(".conn-text");
const banner = document.getElementById("banner");

function showConnection(ok, info) {
  conn.dataset.state = ok ? "ok" : "down";
  if (ok && info) {
    connText.textContent = `${info.node}`;
    conn.title = `daemon ${info.version} on ${info.hostname}, ledger ${info.db}, up ${Math.round(info.uptime_s)} s`;
  } else if (!ok) {
    connText.textContent = "daemon unreachable";
    conn.title = `no answer from ${location.origin}`;
  }
  banner.hidden = ok;
  if (!ok) {
    clear(banner).append(h("strong", null, "Daemon unreachable. "),
      `No answer from ${location.origin}; figures on this page may be out of date. Retrying…`);
  }
}

async function checkHealth() {
  try {
    showConnection(true, await health());
  } catch (err) {
    if (err && err.status) showConnection(true, null);
    else showConnection(false);
  }
}

let wasDown = false;
onConnection((ok) => {
  showConnection(ok);
  if (!ok) wasDown = true;
  else if (wasDown) {
    wasDown = false;
    checkHealth();
    // A view that failed because the daemon was away loads again when it is back.
    if (view.querySelector("[data-state='error'][data-unreachable]")) route();
  }
});

// --- token prompt ----------------------------------------------------------------------------------------------
const dialog = document.getElementById("token-dialog");
const input = document.getElementById("token-input");
const reason = document.getElementById("token-reason");

function openTokenDialog(message) {
  reason.textContent = message;
  input.value = getToken();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue === "save" && input.value.trim()) resolve(input.value.trim());
      else {
        if (dialog.returnValue === "clear") setToken("");
        resolve(null);
      }
    }, { once: true });
    dialog.showModal();
    input.focus();
  });
}

setTokenPrompt((previous) => openTokenDialog(previous
  ? "The daemon refused the token saved in this browser (401). Enter a valid one."
  : "This daemon asks for a bearer token (401). It is kept in this browser only."));

document.getElementById("token-button").addEventListener("click", async () => {
  const token = await openTokenDialog("Bearer token sent with every request to this daemon; kept in this browser only.");
  if (token) {
    setToken(token);
    route();
  }
});

window.addEventListener("hashchange", route);
if (!location.hash) history.replaceState(null, "", "#/runs");
route();
checkHealth();
every(() => (conn.dataset.state === "down" ? 3000 : 10000), checkHealth);
