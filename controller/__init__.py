"""slotpilot controller: probes a Redis/Valkey cluster, decides, acts and publishes routing.

The local test/dev cluster harness (``controller.localcluster``) is not part of this
package's API: production modules never import it."""

from controller.backlog import BacklogError, BacklogSource, read_backlog
from controller.health import Capacity, ClusterView, Gate, NodeHealth, NodeView, build_view
from controller.lease import ClusterLease, LeaseHeld
from controller.migration import BusyKeyConflict, MigrationError, MigrationExecutor, MigrationReport
from controller.platform import LocalPlatform, Member, Platform, PlatformError
from controller.platform.local_nodes import ClusterAuth
from controller.probe import NodeSample, Probe, ProbeResult
from controller.rebalance import RebalancePlan, SlotMove, plan_rebalance
from controller.routing import RoutingEntry, RoutingTable, build_routing_table

__all__ = [
    "BacklogError",
    "BacklogSource",
    "BusyKeyConflict",
    "Capacity",
    "ClusterAuth",
    "ClusterLease",
    "ClusterView",
    "Gate",
    "LeaseHeld",
    "LocalPlatform",
    "Member",
    "MigrationError",
    "MigrationExecutor",
    "MigrationReport",
    "NodeHealth",
    "NodeSample",
    "NodeView",
    "Platform",
    "PlatformError",
    "Probe",
    "ProbeResult",
    "RebalancePlan",
    "RoutingEntry",
    "RoutingTable",
    "SlotMove",
    "build_routing_table",
    "build_view",
    "plan_rebalance",
    "read_backlog",
]
