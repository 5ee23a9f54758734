"""Tables for the terminal (rich): energy per phase of a run, and the comparison of models. Both fit 80 columns."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.table import Table

# Display order and depth of the phases the trainer marks (see loop.py); other names follow, unindented.
PHASE_TREE: list[tuple[str, int]] = [
    ("epoch", 0), ("train_step", 1), ("data_load", 2), ("teacher_forward", 2), ("student_forward", 2),
    ("loss", 2), ("backward", 2), ("optimizer_step", 2), ("eval", 1), ("checkpoint", 1), ("inference", 0),
]
SHORT_TITLES = {"teacher": "teacher", "baseline": "student CE", "distilled": "student KD"}


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def joules(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def joules_pm(value: float | None, uncertainty: float | None) -> str:
    """'930' over '± 39' (under the figure: 80 columns leave no room beside it): the uncertainty to two
    significant figures and the figure to the same decimal place (at most six significant figures of it);
    the figure alone where there is no uncertainty."""
    if value is None or uncertainty is None or not math.isfinite(uncertainty) or uncertainty < 0:
        return joules(value)
    if uncertainty == 0:
        return f"{joules(value)}\n± 0"
    places = 1 - math.floor(math.log10(uncertainty))
    if value:
        places = min(places, 5 - math.floor(math.log10(abs(value))))

    def show(x: float) -> str:
        return f"{x:,.{places}f}" if places >= 0 else f"{round(x, places):,.0f}"

    u = show(uncertainty)
    return f"{show(value)}\n± {u if float(u.replace(',', '')) else '<' + show(10.0 ** -places)}"


def _footnotes(uncertain: bool, incomplete: bool, simulated: bool) -> str:
    notes = ["±: standard uncertainty."] if uncertain else []
    if incomplete:
        notes.append("Partial: some figures leave out time the samples do not cover.")
    if simulated:
        notes.append("SIMULATED devices: these figures show the method, they are not measurements.")
    return " ".join(notes)


def _table(title: str, caption: str | None = None) -> Table:
    return Table(title=title, caption=caption, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD,
                 pad_edge=False, padding=(0, 1, 0, 1), collapse_padding=True)


def phase_table(energy: dict[str, Any], title: str) -> Table:
    rows = {r["name"]: r for r in energy.get("phases", [])}
    t = energy.get("total", {})
    incomplete = t.get("complete") is False or any(r.get("complete") is False for r in rows.values())
    table = _table(title, "Phases nest (indented under their parent). short: shorter than the stored data "
                          "resolves, so known only over many repeats; partial: samples do not cover all of it; "
                          "extrap.: over 1 % carried past the samples. "
                   + _footnotes(any(r.get("uncertainty_j") is not None for r in [t, *rows.values()]), incomplete,
                                bool(energy.get("simulated"))))
    for col in ["phase", "count", "time s", "energy J", "avg W", "% run", "method", "note"]:
        table.add_column(col, justify="left" if col in ("phase", "method", "note") else "right",
                         no_wrap=col != "note", overflow="fold")
    total = t.get("energy_j") or 0.0
    known = dict(PHASE_TREE)
    order = [(n, d) for n, d in PHASE_TREE if n in rows] + [(n, 0) for n in rows if n not in known]
    for name, depth in order:
        r = rows[name]
        extrapolated = (r.get("extrapolated_j") or 0.0) > 0.01 * abs(r["energy_j"])
        notes = [flag for flag, on in (("short", r.get("short")), ("partial", r.get("complete") is False),
                                       ("extrap.", extrapolated)) if on]
        share = 100.0 * r["energy_j"] / total if total else None
        table.add_row("  " * depth + name, str(r["count"]), _num(r["duration_s"], ".2f"),
                      joules_pm(r["energy_j"], r.get("uncertainty_j")),
                      _num(r.get("avg_power_w"), ".1f"), _num(share, ".1f"), r.get("method") or "–", ", ".join(notes))
    table.add_section()
    table.add_row("run", "", _num(t.get("duration_s"), ".2f"), joules_pm(t.get("energy_j"), t.get("uncertainty_j")),
                  _num(t.get("avg_power_w"), ".1f"), "100.0" if total else "–", t.get("method") or "–",
                  "partial" if t.get("complete") is False else "")
    return table


def _params(n: int) -> str:
    return f"{n / 1e3:,.0f}k" if n < 10**6 else f"{n / 1e6:,.1f}M"


ATTRIBUTION_NOTES = {
    "run-share": "run share (its processes' share of the CPU energy above idle, by CPU time, plus its GPUs)",
    "node": "node (all the CPU energy of the node, whoever used it)",
}


def _attribution_note(rows: list[dict[str, Any]], name: Any) -> str:
    kinds = {r.get("attribution", "node") for r in rows}
    if len(kinds) == 1:
        return f"Energy attributed: {ATTRIBUTION_NOTES[next(iter(kinds))]}."
    return "Energy attributed: " + "; ".join(f"{name(r)} {r.get('attribution', 'node')}" for r in rows) + \
        " (run-share: CPU energy above idle by CPU time, plus GPUs; node: all of it)."


def comparison_table(rows: list[dict[str, Any]], title: str = "Comparison") -> Table:
    def name(r: dict[str, Any]) -> str:
        return SHORT_TITLES.get(r["role"], r["role"])


    methods = {m for r in rows for m in (r["train_method"], r["inference_method"]) if m}
    models = ", ".join(f"{name(r)} = {r['model']}" for r in rows)
    caption = (f"{models}. train J: the epochs (training, per-epoch eval, checkpoints); +teacher J: adds the "
               "teacher's training; J/1k inf.: the final held-out passes, per 1 000 examples.")
    if len(methods) == 1:
        caption += f" Energy method: {next(iter(methods))}."
    elif methods:
        caption += " Energy methods (train / inference): " + "; ".join(
            f"{name(r)} {r['train_method'] or '–'} / {r['inference_method'] or '–'}" for r in rows) + "."
    caption += " " + _attribution_note(rows, name)
    keys = ("train_uncertainty_j", "inference_uncertainty_per_1k", "total_with_teacher_uncertainty_j")
    uncertain = any(r.get(k) is not None for r in rows for k in keys)
    incomplete = any(not r.get("complete", True) for r in rows)
    caption += " " + _footnotes(uncertain, incomplete, any(r["simulated"] for r in rows))
    table = _table(title, caption)
    for col in ["model", "acc.", "F1", "params", "train J", "J/example", "+teacher J", "J/1k inf."]:
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in rows:
        table.add_row(name(r), f"{r['accuracy']:.4f}", f"{r['f1']:.4f}", _params(r["parameters"]),
                      joules_pm(r["train_energy_j"], r.get("train_uncertainty_j")),
                      _num(r["train_j_per_sample"], ".3g"),
                      joules_pm(r["total_with_teacher_j"], r.get("total_with_teacher_uncertainty_j")),
                      joules_pm(r["inference_j_per_1k"], r.get("inference_uncertainty_per_1k")))
    return table
