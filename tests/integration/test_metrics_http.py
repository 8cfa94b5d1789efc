"""Metrics values and the HTTP routes, against fixed views (no Redis; HTTP is real)."""
# ruff: noqa: E501

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from controller.health import ClusterView
from controller.http import ControllerHTTPServer
from controller.metrics import ControllerMetrics
from controller.policy import Decision
from controller.probe import NodeSample, ProbeResult
from controller.routing import build_routing_table
from tests.unit.test_routing import view_with


def samples(metrics: ControllerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_node_and_cluster_gauges_and_vanished_nodes() -> None:
    metrics = ControllerMetrics()
    metrics.observe_view(view_with(down="127.0.0.1:7001"))
    got = samples(metrics)
    key = (
        "slotpilot_node_up",
        (("node", "127.0.0.1:7001"), ("role", "primary"), ("shard", "bbbb" + "0" * 36)),
    )
    assert got[key] == 0
    assert (
        got[
            (
                "slotpilot_node_up",
                (("node", "127.0.0.1:7000"), ("role", "primary"), ("shard", "aaaa" + "0" * 36)),
            )
        ]
        == 1
    )
    assert got[("slotpilot_node_utilization_ratio", (("node", "127.0.0.1:7000"),))] == 0.1
    assert got[("slotpilot_cluster_state_ok", ())] == 1
    smaller = view_with()
    smaller = ClusterView(smaller.taken_at, {k: v for k, v in smaller.nodes.items() if k != "127.0.0.1:7002"},
                          smaller.shard_utilization, smaller.utilization, smaller.max_utilization,
                          smaller.gates, smaller.epoch, smaller.last_epoch_change)  # fmt: skip
    metrics.observe_view(smaller)
    assert not any(
        labels and dict(labels).get("node") == "127.0.0.1:7002" for _, labels in samples(metrics)
    )


def test_probe_errors_decisions_and_blocked_reasons() -> None:
    metrics = ControllerMetrics()
    result = ProbeResult(0, 0.02, "a:1", (), {"a:1": NodeSample("a:1", 0, error="timeout")})
    metrics.observe_probe(result)
    metrics.observe_probe(result)
    metrics.observe_decision(Decision("jobs", 1, 5, "up"))
    metrics.observe_decision(Decision("jobs", 5, 5, "held", ("stabilization",)))
    metrics.observe_decision(Decision("jobs", 5, 5, "ok"))
    metrics.observe_breakers({"a:1": "open", "b:1": "closed"})
    metrics.observe_backlog("jobs", 42)
    got = samples(metrics)
    assert got[("slotpilot_probe_errors_total", (("node", "a:1"), ("reason", "timeout")))] == 2
    assert got[("slotpilot_probe_duration_seconds_count", ())] == 2
    assert (
        got[("slotpilot_scaling_decisions_total", (("direction", "up"), ("target", "jobs")))] == 1
    )
    assert (
        got[("slotpilot_scaling_blocked", (("reason", "stabilization"), ("target", "jobs")))] == 0
    )
    assert got[("slotpilot_replicas", (("kind", "desired"), ("target", "jobs")))] == 5
    assert got[("slotpilot_breaker_state", (("node", "a:1"),))] == 2
    assert got[("slotpilot_consumer_backlog", (("target", "jobs"),))] == 42


def _get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_http_routes() -> None:
    state: dict[str, object] = {"ready": False, "table": None}
    server = ControllerHTTPServer(
        "127.0.0.1", 0, metrics=ControllerMetrics(), ready=lambda: bool(state["ready"]),
        status=lambda: {"ready": state["ready"]}, routing=lambda: state["table"],  # type: ignore[return-value]
    ).start()  # fmt: skip
    try:
        url = server.url
        assert _get(f"{url}/healthz")[0] == 200
        assert _get(f"{url}/readyz")[0] == 503
        assert _get(f"{url}/v1/routing")[0] == 503
        state["ready"], state["table"] = True, build_routing_table(view_with())
        assert _get(f"{url}/readyz")[0] == 200
        status, headers, body = _get(f"{url}/v1/routing")
        assert status == 200 and json.loads(body)["version"] == 1
        assert _get(f"{url}/v1/routing", {"If-None-Match": headers["ETag"]})[0] == 304
        assert _get(f"{url}/v1/routing", {"If-None-Match": '"0-stale"'})[0] == 200
        assert _get(f"{url}/metrics")[1]["Content-Type"].startswith("text/plain")
        assert _get(f"{url}/v1/status", method="POST")[0] == 405
        assert _get(f"{url}/x")[0] == 404
        state["table"] = "broken"  # a failing handler answers 500 and the server lives on
        assert _get(f"{url}/v1/routing")[0] == 500
        assert _get(f"{url}/healthz")[0] == 200
    finally:
        server.stop()
