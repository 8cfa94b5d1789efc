"""slotpilot controller: probes a Redis/Valkey cluster, decides, acts and publishes routing."""

from controller.backlog import BacklogError, BacklogSource, read_backlog
from controller.health import Capacity, ClusterView, Gate, NodeHealth, NodeView, build_view
from controller.lease import ClusterLease, LeaseHeld
from controller.localcluster import ClusterAuth, LocalCluster, TLSFiles
from controller.migration import BusyKeyConflict, MigrationError, MigrationExecutor, MigrationReport
from controller.platform import LocalPlatform, Member, Platform, PlatformError
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
    "LocalCluster",
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
    "TLSFiles",
    "build_routing_table",
    "build_view",
    "plan_rebalance",
    "read_backlog",
]
