"""slotpilot controller: probes a Redis/Valkey cluster, decides, acts and publishes routing."""

from controller.localcluster import LocalCluster

__all__ = ["LocalCluster"]
