"""slotpilot controller: probes a Redis/Valkey cluster, decides, acts and publishes routing.

The public names load their modules on first use (a module ``__getattr__``), so importing
``controller`` (as every ``slotpilot`` command does) costs nothing until a name is used:
``slotpilot --help`` never loads redis-py or pydantic.

The local test/dev cluster harness (``controller.localcluster``) is not part of this
package's API: production modules never import it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.backlog import BacklogError, BacklogSource, read_backlog
    from controller.health import Capacity, ClusterView, Gate, NodeHealth, NodeView, build_view
    from controller.lease import ClusterLease, LeaseHeld
    from controller.migration import (
        BusyKeyConflict,
        MigrationError,
        MigrationExecutor,
        MigrationReport,
    )
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

_HOME = {  # each public name and the module that defines it
    "controller.backlog": ("BacklogError", "BacklogSource", "read_backlog"),
    "controller.health": ("Capacity", "ClusterView", "Gate", "NodeHealth", "NodeView",
                          "build_view"),
    "controller.lease": ("ClusterLease", "LeaseHeld"),
    "controller.migration": ("BusyKeyConflict", "MigrationError", "MigrationExecutor",
                             "MigrationReport"),
    "controller.platform": ("LocalPlatform", "Member", "Platform", "PlatformError"),
    "controller.platform.local_nodes": ("ClusterAuth",),
    "controller.probe": ("NodeSample", "Probe", "ProbeResult"),
    "controller.rebalance": ("RebalancePlan", "SlotMove", "plan_rebalance"),
    "controller.routing": ("RoutingEntry", "RoutingTable", "build_routing_table"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    """A public name, its module imported on first use (then cached in this module)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
