// Every request to the daemon goes through apiGet/apiSend: one place adds the bearer token and turns failures
// into errors a view can explain (daemon unreachable, not found, token needed).

const TOKEN_KEY = "joulemeter.token";
const API = "api/v1"; // relative: the dashboard also works behind a reverse proxy under a path prefix

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

export class Unreachable extends Error {
  constructor(path, cause) {
    super(`cannot reach the daemon (${path})`);
    this.path = path;
    this.cause = cause;
  }
}

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

const connectionListeners = new Set();
let lastConnection = null;

/** Called with true/false each time the daemon's reachability changes. */
export function onConnection(listener) {
  connectionListeners.add(listener);
  return () => connectionListeners.delete(listener);
}

function reportConnection(ok) {
  if (ok === lastConnection) return;
  lastConnection = ok;
  for (const fn of connectionListeners) fn(ok);
}

let tokenPrompt = null; // one prompt shared by every request that met a 401 meanwhile
let askForToken = async () => null;

/** Installs the function that asks the user for a token (returns the token, or null if they cancel). */
export function setTokenPrompt(fn) {
  askForToken = fn;
}

export function url(path, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") qs.set(k, String(v));
  }
  const q = qs.toString();
  return q ? `${path}?${q}` : path;
}

async function request(path, init, retried = false) {
  const headers = new Headers(init.headers || {});
  headers.set("Accept", "application/json");
  const token = getToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  let res;
  try {
    res = await fetch(path, { ...init, headers, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    reportConnection(false);
    throw new Unreachable(path, err);
  }
  reportConnection(true);
  if (res.status === 401 && !retried) {
    tokenPrompt = tokenPrompt || askForToken(token).finally(() => { tokenPrompt = null; });
    const given = await tokenPrompt;
    if (given) {
      setToken(given);
      return request(path, init, true);
    }
  }
  if (!res.ok) {
    let detail = res.statusText || `HTTP ${res.status}`;
    try {
      const body = await res.json();
      if (body && body.detail !== undefined) {
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(res.status, detail, path);
  }
  return res.status === 204 ? null : res.json();
}

/** GET `${API}/${path}` with query parameters; resolves to the parsed JSON. */
export function apiGet(path, params, signal) {
  return request(url(`${API}/${path}`, params), { method: "GET", signal });
}

export function apiSend(method, path, body, signal) {
  return request(`${API}/${path}`, {
    method, signal, body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
  });
}

/** The daemon's health answer (outside /api/v1). */
export function health(signal) {
  return request("healthz", { method: "GET", signal });
}
