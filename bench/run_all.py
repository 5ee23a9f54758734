"""Runs every benchmark, one after the other (they would disturb each other), then checks the targets.

    .venv/bin/python bench/run_all.py              # everything, about 45 minutes (the accuracy matrix is 30)
    .venv/bin/python bench/run_all.py --quick      # everything in its quick form, about 5 minutes
    .venv/bin/python bench/run_all.py --targets    # only the target check, from the JSON already in bench/out/

Each benchmark writes bench/out/<name>.json (or <name>-quick.json); the target check reads those.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from accuracy_matrix import verdicts  # noqa: E402

BENCHMARKS = ("accuracy", "overhead", "daemon_cost", "ingest_query")


def load(name: str, quick: bool) -> dict[str, Any] | None:
    path = harness.OUT / f"{name}{'-quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def targets(quick: bool) -> tuple[str, list[dict[str, Any]]]:
    out: list[dict[str, Any]] = []

    def add(target: str, value: str, met: bool | None, note: str = "") -> None:
        out.append({"target": target, "measured": value, "met": met, "note": note})

    acc = load("accuracy-matrix", quick)
    if acc is not None:
        cs = {(c["sensor"], c["length"], c["host"], c["tool"]): c for c in acc["cells"]}
        table = verdicts(cs)
        for col, label in ((4, "the bound for its sensor model and phase length"),
                           (5, "never worse than the best peer"), (6, "loaded host within 1.5x of quiet")):
            judged = [r for r in table if r[col] != "–"]
            missed = [f"{r[0]} {r[1]} {r[2]}: {r[3]}" for r in judged if r[col] != "met"]
            more = f" and {len(missed) - 6} more" if len(missed) > 6 else ""
            add(f"accuracy, worst phase name per cell: {label}", f"{len(judged) - len(missed)} of {len(judged)} "
                f"cells met", not missed, "; ".join(missed[:6]) + more)
    ovh = load("overhead", quick)
    if ovh is not None:
        by = {r["tool"]: r for r in ovh["per_phase_s"]}
        if "ours, daemon up" in by and "CodeCarbon task" in by:
            ratio = by["CodeCarbon task"]["median"] / by["ours, daemon up"]["median"]
            add("per-phase cost at least 100x below a CodeCarbon task", f"{ratio:.0f}x (median)", ratio >= 100)
        else:
            add("per-phase cost at least 100x below a CodeCarbon task", "our client not available", None)
    cost = load("daemon_cost", quick)
    if cost is not None:
        r = next((r for r in cost["rows"] if r["gpus"] == 8 and r["interval_s"] == 0.1), None)
        if r is not None:
            add("daemon under 1 % of a core at 0.1 s with 8 GPUs", f"{r['cpu_core_pct']:.2f} %", r["cpu_core_pct"] < 1.0)
    iq = load("ingest_query", quick)
    if iq is not None:
        # The first query computes; the daemon keeps a stopped run's answer, so later ones are cache hits.
        first, *repeats = iq["queries"]["rest_energy_s"]
        n = iq["ledger"]["samples"]
        again = f"; repeats {', '.join(f'{r * 1e3:,.0f}' for r in repeats)} ms (kept answer)" if repeats else ""
        add(f"energy-per-phase query for the {n:,}-sample run under 300 ms",
            f"first query {first * 1e3:,.0f} ms (REST){again}", first < 0.3)
    text = harness.table(["target", "measured", "met", "note"],
                         [[t["target"], t["measured"], {True: "met", False: "MISSED", None: "n/a"}[t["met"]], t["note"]]
                          for t in out], title="Targets" + (" (quick runs)" if quick else ""))
    return text, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets", action="store_true", help="only check the targets from existing results")
    ap.add_argument("--only", choices=BENCHMARKS, action="append", help="run only these benchmarks")
    args = ap.parse_args()
    failed = []
    if not args.targets:
        for name in args.only or BENCHMARKS:
            cmd = [sys.executable, str(Path(__file__).with_name(f"{name}.py"))] + (["--quick"] if args.quick else [])
            print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
            t = time.time()
            rc = subprocess.call(cmd, cwd=harness.ROOT)
            print(f"=== {name}: exit {rc} after {time.time() - t:.0f} s", flush=True)
            if rc != 0:
                failed.append(name)
    text, rows = targets(args.quick)
    print()
    print(text)
    harness.write_json("targets-quick" if args.quick else "targets", {"targets": rows, "summary_markdown": text})
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
