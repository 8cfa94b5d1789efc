"""The shipped alert rules: promtool checks and unit-tests them, every metric they read is
one the controller exports, and every alert has its runbook section.

promtool (Debian's ``prometheus`` package; CI installs it) runs as a subprocess on the very
file the chart ships. The unit tests are only worth something if they can fail, so they are
also run against two broken copies of the rules: one where every alert always fires (every
"must not fire" case must then fail) and one where none ever fires (every firing case must
then fail).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.metrics import ControllerMetrics
from tests.alerts.controller_scene import (
    TARGET_LABELS,
    D,
    eventful_controller,
    healthy_controller,
    scraped_series,
)
from tests.alerts.promql_names import SCRAPE_SERIES, exposed_names, metric_names
from tests.unit.test_metrics import SHARD_A, SHARD_B, C

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "slotpilot" / "files" / "alerts.yaml"
RULE_TESTS = ROOT / "tests" / "alerts" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SEVERITIES = {"warning", "critical"}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not on PATH (Debian package 'prometheus'; CI installs it)",
)


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _rule_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return tests


def _promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _runbook_anchors() -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    return {github_anchor(h) for h in headings}


# -- promtool ----------------------------------------------------------------------------


@needs_promtool
def test_promtool_check_rules_accepts_the_shipped_file() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _run_against(tmp_path: Path, expr: str) -> str:
    """Run the unit tests against a copy of the rules where every alert's expr is
    ``expr`` and no ``for`` delays it; the copy sits where the test file expects the rules."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = expr
            rule.pop("for", None)
    rules = tmp_path / RULES.relative_to(ROOT)
    rules.parent.mkdir(parents=True)
    rules.write_text(yaml.safe_dump(doc))
    tests = tmp_path / RULE_TESTS.relative_to(ROOT)
    tests.parent.mkdir(parents=True)
    shutil.copy(RULE_TESTS, tests)
    result = _promtool("test", "rules", str(tests.relative_to(tmp_path)), cwd=tmp_path)
    assert result.returncode != 0, "the unit tests passed against broken rules"
    return result.stdout + result.stderr


def _failed_test_names(output: str) -> set[str]:
    return set(re.findall(r"^\s*name: (.+),\s*$", output, flags=re.MULTILINE))


@needs_promtool
def test_every_quiet_case_fails_when_the_alert_always_fires(tmp_path: Path) -> None:
    failed = _failed_test_names(_run_against(tmp_path, "vector(1)"))
    quiet = {
        t["name"] for t in _rule_tests() if not any(c["exp_alerts"] for c in t["alert_rule_test"])
    }
    assert quiet and quiet <= failed, f"quiet cases that passed anyway: {sorted(quiet - failed)}"


@needs_promtool
def test_every_firing_case_fails_when_the_alert_never_fires(tmp_path: Path) -> None:
    failed = _failed_test_names(_run_against(tmp_path, "vector(1) == 0"))
    firing = {
        t["name"] for t in _rule_tests() if any(c["exp_alerts"] for c in t["alert_rule_test"])
    }
    assert firing and firing <= failed, (
        f"firing cases that passed anyway: {sorted(firing - failed)}"
    )


Firing = dict[str, dict[str, str]]  # alertname -> the labels that say what it is about


def _firing_on(metrics: ControllerMetrics, tmp_path: Path, expected: Firing) -> str:
    """promtool's verdict on which alerts fire after 40 minutes of scrapes of ``metrics``
    (each expected one exactly once, about what its labels name); its output when that
    is not ``expected``."""
    about = ("node", "target", "reason", "stage", "kind")
    samples = []
    for name, labels in expected.items():
        text = ", ".join(f'{k}="{v}"' for k, v in {"alertname": name, **labels}.items())
        samples.append({"labels": f"{{{text}}}", "value": 1})
    check = {
        "expr": f'count by (alertname, {", ".join(about)}) (ALERTS{{alertstate="firing"}})',
        "eval_time": "40m",
        "exp_samples": samples,
    }
    suite = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": scraped_series(metrics, 45),
                   "promql_expr_test": [check]}],
    }  # fmt: skip
    path = tmp_path / "scene_test.yaml"
    path.write_text(yaml.safe_dump(suite))
    result = _promtool("test", "rules", str(path))
    return "" if result.returncode == 0 else result.stdout + result.stderr


@needs_promtool
def test_no_alert_fires_on_a_healthy_controllers_real_metrics(tmp_path: Path) -> None:
    assert _firing_on(healthy_controller(), tmp_path, {}) == ""


@needs_promtool
def test_the_right_alerts_fire_on_an_eventful_controllers_real_metrics(tmp_path: Path) -> None:
    """Series with the label sets the registry really exports (not hand-written ones):
    the joins on job/instance/target and the aggregations hold on them, and each alert
    names the node, target, reason, stage or kind it is about."""
    expected = {
        "SlotpilotClusterStateNotOk": {},  # B reports cluster_state fail
        "SlotpilotNodeDown": {"node": C},  # C times out
        "SlotpilotBreakerOpen": {"node": C},  # C's breaker is open
        "SlotpilotProbeErrors": {"node": C},  # every probe of C fails
        "SlotpilotScalingStuck": {"target": "shards"},  # 3 wanted, 2 there
        "SlotpilotScalingBlocked": {"target": "worker", "reason": "source_failed"},
        "SlotpilotScalingFailing": {"stage": "shards"},  # a reshard fails every minute
        "SlotpilotMigrationStuck": {},  # slots moving for 40 minutes
        "SlotpilotReplicaStale": {"node": D},  # D silent from its primary for 2 minutes
        "SlotpilotRepairsRepeated": {"kind": "rejoin"},  # a rejoin every minute
    }
    assert _firing_on(eventful_controller(), tmp_path, expected) == ""


@needs_promtool
def test_an_infinite_lag_is_scraped_as_plus_inf(tmp_path: Path) -> None:
    """A replica whose link is down has lag +Inf: the scene's series must say so in a form
    promtool reads (``+Infx3`` is a name to it, not a number)."""
    metrics = ControllerMetrics()
    metrics.observe_replicas({C: (SHARD_A, math.inf, True)})
    labels = {"node": C, "shard": SHARD_A, **TARGET_LABELS}
    check = {
        "expr": "slotpilot_replica_lag_seconds",
        "eval_time": "3m",
        "exp_samples": [{"labels": "slotpilot_replica_lag_seconds{"
                         + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
                         "value": math.inf}],
    }  # fmt: skip
    suite = {"tests": [{"interval": "1m", "input_series": scraped_series(metrics, 5),
                        "promql_expr_test": [check]}]}  # fmt: skip
    path = tmp_path / "inf_test.yaml"
    path.write_text(yaml.safe_dump(suite))
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scenes_publish_replicas_and_repairs() -> None:
    """The quiet scene has replicas that get reads (so SlotpilotReplicaStale has series to
    stay quiet on) and no repairs; the eventful one a stale replica and repairs."""
    healthy, eventful = healthy_controller().registry, eventful_controller().registry
    c, d = {"node": C, "shard": SHARD_A}, {"node": D, "shard": SHARD_B}
    assert healthy.get_sample_value("slotpilot_replica_stale", c) == 0
    assert healthy.get_sample_value("slotpilot_replica_stale", d) == 0
    assert healthy.get_sample_value("slotpilot_replica_lag_seconds", d) == 1
    assert healthy.get_sample_value("slotpilot_repairs_total", {"kind": "rejoin"}) is None
    assert eventful.get_sample_value("slotpilot_replica_stale", c) == 0  # down, not stale
    assert eventful.get_sample_value("slotpilot_replica_lag_seconds", c) is None
    assert eventful.get_sample_value("slotpilot_replica_stale", d) == 1
    assert eventful.get_sample_value("slotpilot_replica_lag_seconds", d) == 120
    assert eventful.get_sample_value("slotpilot_repairs_total", {"kind": "rejoin"}) == 1


# -- the rules file and its unit tests (no promtool needed) ------------------------------


def test_unit_tests_read_the_shipped_rules_file() -> None:
    files = yaml.safe_load(RULE_TESTS.read_text())["rule_files"]
    assert [(RULE_TESTS.parent / f).resolve() for f in files] == [RULES]


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in _rule_tests():
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
            for alert in case["exp_alerts"]:  # a firing case checks labels and annotations
                assert alert["exp_labels"]["severity"] in SEVERITIES, test["name"]
                assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "alerts without a case where they fire"
    assert names - quiet == set(), "alerts without a case where they must not fire"
    assert (firing | quiet) - names == set(), "cases for alerts that do not exist"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    anchors = _runbook_anchors()
    for rule in _alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        notes = rule["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), name
        assert notes["runbook_url"] == f"docs/runbooks.md#{github_anchor(name)}", name
        assert github_anchor(name) in anchors, f"docs/runbooks.md has no section {name}"


def test_runbook_sections_are_complete_and_links_resolve() -> None:
    text = RUNBOOKS.read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M))
    for rule in _alerts():
        body = sections[rule["alert"]]
        for part in ("**Meaning.**", "**Check.**", "**Act.**"):
            assert part in body, f"{rule['alert']}: no {part}"
        assert "slotpilot " in body, f"{rule['alert']}: no slotpilot command or metric"
    anchors = _runbook_anchors()
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, f"docs/runbooks.md links to a missing section #{link}"


def test_github_anchor() -> None:
    assert github_anchor("SlotpilotNoLeader") == "slotpilotnoleader"
    assert github_anchor("Stale replicas: what to do") == "stale-replicas-what-to-do"


# -- metric names ------------------------------------------------------------------------


def test_every_metric_in_the_alerts_is_exported_by_the_controller() -> None:
    exported = exposed_names(ControllerMetrics().registry) | SCRAPE_SERIES
    used: set[str] = set()
    for rule in _rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule.get('alert')}: no metric found in {rule['expr']!r}"
        unknown = names - exported
        assert not unknown, f"{rule.get('alert')} reads metrics nobody exports: {sorted(unknown)}"
        used |= names
    assert "slotpilot_leader" in used and "up" in used


def test_exposed_names_follow_the_exposition_suffixes() -> None:
    exported = exposed_names(ControllerMetrics().registry)
    assert "slotpilot_errors_total" in exported  # a labelled counter with no child yet
    assert "slotpilot_errors" not in exported
    assert {"slotpilot_probe_duration_seconds_bucket", "slotpilot_probe_duration_seconds_count",
            "slotpilot_probe_duration_seconds_sum"} <= exported  # fmt: skip
    assert "slotpilot_probe_duration_seconds" not in exported
    assert "slotpilot_node_up" in exported  # a labelled gauge with no child yet


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job=~".*slotpilot.*"} == 0', {"up"}),
        ("max without (instance, pod) (slotpilot_leader) == 0", {"slotpilot_leader"}),
        (
            'rate(a_total{node="x{y}"}[5m]) / on (job, instance) group_left () '
            "rate(b_count[$__rate_interval]) > 0.25 unless c offset 1h",
            {"a_total", "b_count", "c"},
        ),
        ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) * 1e3", {"x_bucket"}),
        ("vector($scale_up_threshold)", set()),
        (
            'absent(up{job="a"}) or label_replace(m, "dst", "$1", "src", "(.*)")',
            {"up", "m"},
        ),
    ],
)
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_renamed_metric_is_caught() -> None:
    exported = exposed_names(ControllerMetrics().registry)
    assert metric_names("slotpilot_leaders == 0") - exported == {"slotpilot_leaders"}
    assert metric_names("rate(slotpilot_errors[5m])") - exported == {"slotpilot_errors"}
    with pytest.raises(ValueError, match="__name__"):
        metric_names('{__name__="slotpilot_leader"}')
