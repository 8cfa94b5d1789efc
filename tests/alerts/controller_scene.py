"""Series scraped from a real :class:`ControllerMetrics`, as promtool input series.

Hand-written promtool series can drift from what the controller exports (a label renamed,
a join on a label that is not there). These come from the registry itself: a controller
that has seen one eventful cycle is rendered, parsed back, and every sample becomes a
series of one-minute scrapes for promtool to evaluate the alerts and the dashboard on.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from controller.health import ClusterView
from controller.metrics import ControllerMetrics
from controller.policy import Decision
from controller.routing import build_routing_table, replica_lag
from tests.unit.test_health import NODES
from tests.unit.test_metrics import A, B, C, probe, view

__all__ = ["D", "TARGET_LABELS", "eventful_controller", "healthy_controller", "scraped_series"]

# What Prometheus adds to every series of the controller's scrape target.
TARGET_LABELS = {"job": "slotpilot", "instance": "10.0.0.1:8080"}
# A second replica, of shard B (the eventful scene's stale one).
D = "127.0.0.1:7003"
_NODES_WITH_D = NODES + (
    "dddd000000000000000000000000000000000000 127.0.0.1:7003@17003 slave "
    "bbbb000000000000000000000000000000000000 0 0 2 connected\n"
)
_LINK_UP = {"master_link_status": "up", "master_last_io_seconds_ago": 1}


def _observe_replicas(metrics: ControllerMetrics, view: ClusterView) -> None:
    """What the control loop publishes after each probe: every replica's lag, and whether
    the routing table (default ``routing.max_replica_lag_seconds``) gives it no reads."""
    states = {e.address: e.state for e in build_routing_table(view).nodes}
    metrics.observe_replicas({
        address: (node.shard or "", replica_lag(node), states.get(address) == "stale")
        for address, node in view.nodes.items() if node.role == "replica"
    })  # fmt: skip


def healthy_controller() -> ControllerMetrics:
    """A leader's metrics in a quiet cycle: every node up, both replicas in sync with their
    primaries, nothing wanted, nothing held, nothing repaired."""
    metrics = ControllerMetrics()
    result = probe(_NODES_WITH_D, p7002=_LINK_UP, p7003=_LINK_UP)
    metrics.observe_probe(result)
    metrics.observe_view(seen := view(result))
    _observe_replicas(metrics, seen)
    metrics.observe_breakers({A: "closed", B: "closed", C: "closed", D: "closed"})
    metrics.observe_decision(Decision("shards", 2, 2, "utilization within thresholds"))
    metrics.observe_decision(Decision("worker", 4, 4, "backlog within tolerance"))
    metrics.observe_backlog("worker", 380.0)
    metrics.set_leader(True)
    metrics.set_migration_in_progress(False)
    return metrics


def eventful_controller() -> ControllerMetrics:
    """A leader's metrics after a cycle where a lot is wrong: node C times out behind an
    open breaker, node B reports cluster_state fail, replica D has heard nothing from its
    primary for 2 minutes (stale), the shard policy wants 3 shards with 2, a consumer is
    held because its backlog source failed, slots are being moved, a reshard failed, a pod
    was met again (a rejoin repair) and open slots were closed."""
    metrics = ControllerMetrics()
    lagging = {"master_link_status": "up", "master_last_io_seconds_ago": 120}
    result = probe(_NODES_WITH_D, errors={C: "timeout"}, p7003=lagging)
    failing = replace(result.samples[B], cluster_info={**result.samples[B].cluster_info,
                                                       "cluster_state": "fail"})  # fmt: skip
    result = replace(result, samples={**result.samples, B: failing})
    metrics.observe_probe(result)
    metrics.observe_view(seen := view(result))
    _observe_replicas(metrics, seen)
    metrics.observe_breakers({A: "closed", B: "closed", C: "open", D: "closed"})
    metrics.observe_decision(Decision("shards", 2, 3, "utilization above threshold"))
    metrics.observe_decision(Decision("worker", 4, 4, "source failed", ("source_failed",)))
    metrics.observe_backlog("worker", 500.0)
    metrics.set_leader(True)
    metrics.set_migration_in_progress(True)
    metrics.observe_batch(slots=64, keys=4000)
    metrics.migration_duration.observe(2.5)
    metrics.count_error("shards")
    metrics.count_repair("rejoin")
    metrics.count_repair("open_slots", 12)  # slots, not events: no alert counts them
    return metrics


def scraped_series(metrics: ControllerMetrics, scrapes: int) -> list[dict[str, str]]:
    """promtool ``input_series`` for ``scrapes`` one-minute scrapes: gauges hold their
    value (``+Inf`` too: a replica whose link is down), counters and histogram parts grow
    by theirs at every scrape (so rates and increases are above 0), and ``up`` is 1."""
    target = ", ".join(f"{k}={json.dumps(v)}" for k, v in TARGET_LABELS.items())
    out = [{"series": f"up{{{target}}}", "values": f"1x{scrapes}"}]
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name.endswith("_created") or math.isnan(sample.value):
                continue
            labels = {**sample.labels, **TARGET_LABELS}
            text = ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
            grows = family.type in {"counter", "histogram"}
            if math.isinf(sample.value):  # promtool reads "+Infx3" as a name, not a number
                values = f"{'+' if sample.value > 0 else '-'}Inf+0x{scrapes}"
            elif grows:
                values = f"0+{sample.value:g}x{scrapes}"
            else:
                values = f"{sample.value:g}x{scrapes}"
            out.append({"series": f"{sample.name}{{{text}}}", "values": values})
    return out
