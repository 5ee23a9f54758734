"""The Grafana dashboard and the Prometheus rules ask only for series the daemon exposes, in valid PromQL."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon_proc import DaemonProcess

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboards" / "grafana" / "joulemeter.json"
RULES = ROOT / "deploy" / "prometheus" / "joulemeter-rules.yml"
# Grafana fills these in before the query reaches Prometheus.
GRAFANA_MACROS = {"$__rate_interval": "20s", "$__range": "1h", "$__interval": "5s"}
METRIC = re.compile(r"\b(joulemeter_[a-z_]+)\b")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels(_dashboard()) for t in p.get("targets", [])]


def _variable_queries() -> list[str]:
    return [v["query"]["query"] for v in _dashboard()["templating"]["list"] if v["type"] == "query"]


def _rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _as_promql(expr: str) -> str:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return re.sub(r"\$([a-z_]+)", ".*", expr)  # a multi-value variable stands in a regex matcher


def _exposed_names(tmp: Path) -> set[str]:
    """The sample names a daemon with a GPU and a run in progress exposes, and those its families declare
    (a counter family with no sample yet, such as sensor errors, still names its `_total` series)."""
    d = DaemonProcess(tmp, trace={"gpus": [{"trace": {"steps": [[1.0, 150.0]]}}]}).start()
    try:
        with d.client() as c:
            assert c.post("/api/v1/runs", json={"name": "dash", "tags": {"slurm_job_id": "1"}}).status_code == 201
        deadline = time.time() + 10
        while True:
            text = httpx.get(f"{d.url}/metrics", timeout=10).text
            if "joulemeter_energy_joules_total{" in text or time.time() > deadline:
                break
            time.sleep(0.1)
    finally:
        d.stop()
    families = list(text_string_to_metric_families(text))
    names = {s.name for f in families for s in f.samples}
    names |= {f.name + "_total" if f.type == "counter" else f.name for f in families}
    return names


def test_dashboard_and_rules_use_only_exposed_metric_names(tmp_path: Path) -> None:
    exposed = _exposed_names(tmp_path)
    wanted = {m for e in _exprs() + _variable_queries() + _rule_exprs() for m in METRIC.findall(e)}
    assert {"joulemeter_power_watts", "joulemeter_energy_joules_total", "joulemeter_utilization_ratio",
            "joulemeter_temperature_celsius", "joulemeter_run_info"} <= wanted
    assert wanted - exposed == set()


@pytest.mark.parametrize("expr", sorted(set(_exprs() + _rule_exprs())))
def test_every_query_is_valid_promql(expr: str) -> None:
    promql_parser.parse(_as_promql(expr))


def test_variable_queries_select_valid_series() -> None:
    for query in _variable_queries():
        m = re.fullmatch(r"label_values\((.+), ([a-z_]+)\)", query)
        assert m, query
        promql_parser.parse(_as_promql(m.group(1)))


def test_the_dashboard_has_what_operators_look_for() -> None:
    dash = _dashboard()
    titles = {p["title"] for p in _panels(dash)}
    for needed in ("Power per device", "Energy rate per device (from the energy counters)", "Utilisation",
                   "Temperature", "Active runs"):
        assert needed in titles
    variables = {v["name"] for v in dash["templating"]["list"]}
    used = {v for e in _exprs() + _variable_queries() for v in re.findall(r"\$([a-z_]+)", e) if not v.startswith("__")}
    assert used <= variables, used - variables
    for p in _panels(dash):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids))
    runs = next(p for p in _panels(dash) if p["title"] == "Active runs")
    assert any("joulemeter_run_info" in t["expr"] for t in runs["targets"])
