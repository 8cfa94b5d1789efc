"""The Grafana dashboard the chart ships (helm/slotpilot/files/dashboard.json).

It must load, name itself (uid, title), give every panel a title and a query against the
templated Prometheus data source, lay panels out without overlap, define every variable its
queries use, and query only metrics the controller really exports — a renamed metric fails
here instead of leaving an empty panel. When promtool is on PATH, every query (variables
replaced by sample values) is also parsed by Prometheus's own PromQL parser, and evaluated
by promtool over series scraped from a real :class:`ControllerMetrics` that has seen a
probe, decisions, a migration and errors: every panel must then show data.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.config import ShardsConfig
from controller.metrics import ControllerMetrics
from tests.alerts.controller_scene import eventful_controller, scraped_series
from tests.alerts.promql_names import exposed_names, metric_names

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "slotpilot" / "files" / "dashboard.json"
DATASOURCE_UID = "${DS_PROMETHEUS}"
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__range": "6h", "__interval": "1m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _graph_panels() -> list[dict[str, Any]]:
    return [p for p in _panels(_dashboard()["panels"]) if p["type"] != "row"]


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _dashboard()["templating"]["list"]}


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query["query"] if isinstance(query, dict) else query)


def _exprs() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable's selector."""
    out = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in _graph_panels() for t in p["targets"]]
    for name, variable in _variables().items():
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(_variable_query(variable))
            assert match, f"variable {name}: expected label_values(selector, label)"
            if match.group(1):
                out.append((f"variable {name}", match.group(1)))
    return out


def _sample_value(name: str) -> str:
    """A value for a variable that makes the query plain PromQL."""
    if name in GRAFANA_BUILTINS:
        return GRAFANA_BUILTINS[name]
    variable = _variables()[name]
    if variable["type"] in {"textbox", "constant", "custom"}:
        return _variable_query(variable).split(",")[0]
    return ".*" if variable.get("includeAll") else "slotpilot"


def _substituted(expr: str) -> str:
    return _VARIABLE.sub(lambda m: _sample_value(next(g for g in m.groups() if g)), expr)


def test_dashboard_loads_and_names_itself() -> None:
    doc = _dashboard()
    assert re.fullmatch(r"[a-z0-9-]{1,40}", doc["uid"])
    assert doc["title"].strip()
    assert isinstance(doc["schemaVersion"], int)
    assert "id" not in doc or doc["id"] is None  # an id would clash across Grafanas


def test_every_panel_has_a_title_and_a_query_on_the_templated_datasource() -> None:
    panels = _graph_panels()
    assert len(panels) >= 10
    for panel in panels:
        assert panel["title"].strip(), panel
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: duplicate refId"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']}: empty query"
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
    for row in (p for p in _panels(_dashboard()["panels"]) if p["type"] == "row"):
        assert row["title"].strip()


def test_the_datasource_is_a_template_variable() -> None:
    variable = _variables()["DS_PROMETHEUS"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    for name, other in _variables().items():
        if other["type"] == "query":
            assert other["datasource"]["uid"] == DATASOURCE_UID, name


def test_every_variable_a_query_uses_is_defined() -> None:
    defined = set(_variables()) | set(GRAFANA_BUILTINS)
    for where, expr in _exprs():
        used = {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}
        assert used <= defined, f"{where}: undefined variables {sorted(used - defined)}"


def test_panels_fit_the_grid_without_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels(_dashboard()["panels"]):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] >= 1 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_metric_queried_is_exported_by_the_controller() -> None:
    exported = exposed_names(ControllerMetrics().registry)
    used: set[str] = set()
    for where, expr in _exprs():
        unknown = metric_names(expr) - exported
        assert not unknown, f"{where} queries metrics nobody exports: {sorted(unknown)}"
        used |= metric_names(expr)
    # the areas the dashboard exists for each read their metrics
    assert {
        "slotpilot_cluster_utilization_ratio",  # utilization vs thresholds
        "slotpilot_replicas",  # shards and consumers, current/desired
        "slotpilot_node_up",  # node health
        "slotpilot_breaker_state",  # breaker state
        "slotpilot_migrated_slots_total",  # migration throughput
        "slotpilot_consumer_backlog",  # consumer backlog
        "slotpilot_scaling_blocked",  # blocked reasons
        "slotpilot_scaling_decisions_total",  # decisions
        "slotpilot_replica_lag_seconds",  # replica lag
        "slotpilot_replica_stale",  # replicas without reads
        "slotpilot_repairs_total",  # repairs by kind
    } <= used


def test_substitution_leaves_no_variable() -> None:
    for where, expr in _exprs():
        assert "$" not in _substituted(expr), where
    assert _substituted('rate(x{job="$job"}[$__rate_interval])') == ('rate(x{job="slotpilot"}[5m])')


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not on PATH (Debian package 'prometheus'; CI installs it)",
)
def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _substituted(expr)}
        for i, (_, expr) in enumerate(_exprs())
    ]
    path = tmp_path / "dashboard_queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not on PATH (Debian package 'prometheus'; CI installs it)",
)
def test_every_query_shows_data_from_a_real_controller(tmp_path: Path) -> None:
    exprs = [(where, _substituted(expr)) for where, expr in _exprs()]
    tests = [
        {
            "interval": "1m",
            "input_series": scraped_series(eventful_controller(), 20),
            "promql_expr_test": [
                {
                    "expr": f"count({expr}) > bool 0",
                    "eval_time": "15m",
                    "exp_samples": [{"labels": "{}", "value": 1}],
                }
                for _, expr in exprs
            ],
        }
    ]
    path = tmp_path / "dashboard_test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    result = subprocess.run(
        ["promtool", "test", "rules", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    failed = {json.loads(q) for q in re.findall(r'^\s*expr: (".*"), time:', output, re.M)}
    empty = [where for where, expr in exprs if f"count({expr}) > bool 0" in failed]
    assert result.returncode == 0, f"queries without data: {empty}\n{output[-3000:]}"


def test_threshold_variables_default_to_the_config_defaults() -> None:
    """The controller exports no thresholds, so the dashboard draws them from variables;
    their defaults are the config's, so a changed default shows here."""
    fields = ShardsConfig.model_fields
    for name in ("scale_up_threshold", "scale_down_threshold"):
        variable = _variables()[name]
        assert float(_variable_query(variable)) == fields[name].default, name
        assert float(variable["current"]["value"]) == fields[name].default, name
