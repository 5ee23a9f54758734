// Units as people read them: joules with SI prefixes and kWh beside them, watts, durations, local times.

const DASH = "—";

function finite(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** Three significant figures, without exponent notation for everyday magnitudes. */
export function sig(x, digits = 3) {
  if (!finite(x)) return DASH;
  if (x === 0) return "0";
  const abs = Math.abs(x);
  if (abs >= 10 ** digits) return Math.round(x).toLocaleString("en-US");
  if (abs < 1e-6) return x.toExponential(digits - 1);
  return String(Number(x.toPrecision(digits)));
}

const PREFIXES = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];

function scaleOf(x) {
  const abs = Math.abs(x);
  for (const [scale, p] of PREFIXES) if (abs >= scale) return [scale, p];
  if (abs >= 1 || x === 0) return [1, ""];
  return abs >= 1e-3 ? [1e-3, "m"] : [1e-6, "µ"];
}

function siUnit(x, unit, digits = 3) {
  if (!finite(x)) return DASH;
  const [scale, p] = scaleOf(x);
  return `${sig(x / scale, digits)} ${p}${unit}`;
}

export function energy(j) {
  return siUnit(j, "J", 4);
}

/**
 * "412.3 ± 1.8 J": the uncertainty to two significant figures and the figure to the same decimal place, both
 * in the figure's unit (at most six significant figures of the figure, however small the uncertainty).
 */
export function energyPm(j, u) {
  if (!finite(j) || !finite(u) || u < 0) return energy(j);
  const [scale, p] = scaleOf(j);
  const v = j / scale;
  const w = u / scale;
  if (w === 0) return `${sig(v, 4)} ± 0 ${p}J`;
  const mag = (x) => Math.floor(Math.log10(Math.abs(x)));
  let d = 1 - mag(w);
  if (v !== 0) d = Math.min(d, 5 - mag(v));
  const round = (x) => (d >= 0 ? x.toFixed(d) : String(Math.round(x / 10 ** -d) * 10 ** -d));
  let us = round(w);
  if (Number(us) === 0) us = `<${round(10 ** -Math.max(d, 0))}`;
  return `${round(v)} ± ${us} ${p}J`;
}

const SUPERSCRIPT = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

/**
 * Three significant figures, and below 0.01 always as "9.92 × 10⁻⁷": a column of small kWh then reads alike,
 * rather than some in exponents and some as strings of zeros.
 */
export function scientific(x, digits = 3) {
  if (!finite(x) || x === 0 || Math.abs(x) >= 0.01) return sig(x, digits);
  const [m, e] = x.toExponential(digits - 1).split("e");
  const exp = String(Number(e)).replace(/./g, (c) => SUPERSCRIPT[c]);
  return `${Number(m)} × 10${exp}`;
}

export function kwh(j) {
  return finite(j) ? `${scientific(j / 3.6e6)} kWh` : DASH;
}

export function power(w) {
  return siUnit(w, "W", 4);
}

export function pct(fraction, digits = 1) {
  return finite(fraction) ? `${(fraction * 100).toFixed(digits)} %` : DASH;
}

export function duration(s) {
  if (!finite(s)) return DASH;
  if (s < 1) return `${sig(s * 1000)} ms`;
  if (s < 60) return `${sig(s)} s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  if (h > 0) return `${h} h ${String(m).padStart(2, "0")} min`;
  return `${m} min ${String(sec).padStart(2, "0")} s`;
}

export function dateTime(t) {
  if (!finite(t)) return DASH;
  const d = new Date(t * 1000);
  const now = new Date();
  const time = d.toLocaleTimeString("en-GB", { hour12: false });
  if (d.toDateString() === now.toDateString()) return `today ${time}`;
  return `${d.toLocaleDateString("en-CA")} ${time}`;
}

export function clock(t) {
  if (!finite(t)) return DASH;
  return new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

export function bytes(n) {
  if (!finite(n)) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let x = n;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${sig(x)} ${units[i]}`;
}

export function metric(v) {
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en-US") : sig(v, 4);
  if (v === null || v === undefined) return DASH;
  return String(v);
}

export { DASH };
