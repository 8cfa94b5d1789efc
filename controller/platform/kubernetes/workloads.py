"""Replica counts on Kubernetes: Deployments for consumers, a StatefulSet for shards.

Both go through the **scale subresource** (``deployments/scale``, ``statefulsets/scale``),
as HPA and KEDA do, so slotpilot needs no write access to the workload's spec.

- :class:`KubernetesPlatform` is the consumer :class:`~controller.platform.Platform`:
  one Deployment per consumer target (same name). It refuses to scale a Deployment that
  an HPA or a KEDA ScaledObject also scales — two autoscalers on one target fight.
  Scale-down leaves the choice of pods to the Deployment controller: slotpilot does not
  set ``controller.kubernetes.io/pod-deletion-cost``, because it has no per-pod measure
  of idleness (backlog is per queue, not per worker) and a guessed cost would only
  reorder pods arbitrarily at the price of one PATCH per pod.
- :class:`StatefulSetNodes` is the shard :class:`~controller.scaling.NodeSource`: pods
  are cluster nodes, addressed by pod IP and the container port named ``redis``, ordered
  by ordinal. A StatefulSet removes its highest ordinals, so scale-in drains, forgets and
  proves those nodes empty *before* :meth:`StatefulSetNodes.remove_nodes` lowers the
  count; their PersistentVolumeClaims are deleted afterwards so a reused ordinal never
  comes back with an old ``nodes.conf``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from controller.platform.base import Member, PlatformError
from controller.platform.kubernetes.api import KubeApi, KubeApiError, NotFound

__all__ = [
    "KubernetesPlatform",
    "PodNode",
    "StatefulSetNodes",
    "label_selector",
    "pod_node",
]

log = logging.getLogger("slotpilot.kubernetes")

REDIS_PORT_NAME = "redis"


def label_selector(match_labels: Mapping[str, str] | None) -> str:
    """``spec.selector.matchLabels`` as a ``labelSelector`` query string."""
    return ",".join(f"{k}={v}" for k, v in sorted((match_labels or {}).items()))


def _name(obj: Any) -> str:
    return str(obj.metadata.name) if obj.metadata is not None and obj.metadata.name else ""


def _ready(pod: Any) -> bool:
    status = pod.status
    if status is None or status.phase not in (None, "Running") or pod.metadata.deletion_timestamp:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


class PodNode:
    """A pod seen as a cluster node: ordinal, address (pod IP + ``redis`` port), ready."""

    __slots__ = ("address", "name", "ordinal", "ready")

    def __init__(self, name: str, ordinal: int, address: str | None, ready: bool) -> None:
        self.name = name
        self.ordinal = ordinal
        self.address = address
        self.ready = ready

    def __repr__(self) -> str:
        return f"PodNode({self.name}, {self.address}, ready={self.ready})"


def pod_node(pod: Any, statefulset: str) -> PodNode | None:
    """Map a StatefulSet's pod to its node; None for a pod that is not ``<sts>-<n>``."""
    name = pod.metadata.name or ""
    prefix, _, suffix = name.rpartition("-")
    if prefix != statefulset or not suffix.isdigit():
        return None
    port = None
    for container in pod.spec.containers if pod.spec else []:
        for declared in container.ports or []:
            if declared.name == REDIS_PORT_NAME:
                port = declared.container_port
    ip = pod.status.pod_ip if pod.status else None
    address = f"{ip}:{port}" if ip and port else None
    return PodNode(name, int(suffix), address, _ready(pod) and address is not None)


class KubernetesPlatform:
    """Consumer Deployments in one namespace, scaled through ``deployments/scale``."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    def get_replicas(self, target: str) -> int:
        scale = self.api.call(
            f"get deployments/scale {target}",
            self.api.apps.read_namespaced_deployment_scale,
            target,
            self.namespace,
        )
        return int(scale.spec.replicas or 0) if scale.spec else 0

    def other_autoscaler(self, target: str) -> str | None:
        """The HPA or KEDA ScaledObject that also scales ``target``, if any."""
        hpas = self.api.call(
            "list horizontalpodautoscalers",
            self.api.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            self.namespace,
        )
        for hpa in hpas.items or []:
            ref = hpa.spec.scale_target_ref if hpa.spec else None
            if ref is not None and ref.kind == "Deployment" and ref.name == target:
                return f"HorizontalPodAutoscaler {_name(hpa)}"
        try:
            scaled = self.api.call(
                "list scaledobjects",
                self.api.custom.list_namespaced_custom_object,
                "keda.sh",
                "v1alpha1",
                self.namespace,
                "scaledobjects",
            )
        except NotFound:
            return None  # KEDA is not installed
        for item in scaled.get("items", []) if isinstance(scaled, dict) else []:
            target_ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
            kind = target_ref.get("kind", "Deployment")
            if target_ref.get("name") == target and kind == "Deployment":
                return f"KEDA ScaledObject {item.get('metadata', {}).get('name')}"
        return None

    def set_replicas(self, target: str, replicas: int) -> None:
        other = self.other_autoscaler(target)
        if other is not None:
            raise PlatformError(
                f"Deployment {target} is also scaled by {other}; refusing to scale it "
                "(two autoscalers on one target fight)"
            )
        self.api.call(
            f"patch deployments/scale {target}",
            self.api.apps.patch_namespaced_deployment_scale,
            target,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )

    def members(self, target: str) -> list[Member]:
        deployment = self.api.call(
            f"get deployments {target}",
            self.api.apps.read_namespaced_deployment,
            target,
            self.namespace,
        )
        selector = label_selector(deployment.spec.selector.match_labels)
        pods = self.api.call(
            "list pods",
            self.api.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
        )
        return [
            Member(
                name=_name(pod),
                address=pod.status.pod_ip if pod.status else None,
                ready=_ready(pod),
            )
            for pod in pods.items or []
        ]

    def close(self) -> None:
        """Nothing to stop: Kubernetes owns the pods."""


class StatefulSetNodes:
    """The shard node source on Kubernetes: one StatefulSet's pods."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        statefulset: str,
        ready_timeout: float = 600.0,
        poll_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.statefulset = statefulset
        self.ready_timeout = ready_timeout
        self.poll_seconds = poll_seconds
        self._sleep = sleep
        self._ordinals: dict[str, int] = {}

    # -- reading ------------------------------------------------------------------------

    def replicas(self) -> int:
        scale = self.api.call(
            f"get statefulsets/scale {self.statefulset}",
            self.api.apps.read_namespaced_stateful_set_scale,
            self.statefulset,
            self.namespace,
        )
        return int(scale.spec.replicas or 0) if scale.spec else 0

    def pods(self) -> list[PodNode]:
        """The StatefulSet's pods (by its selector) as nodes, by ordinal."""
        sts = self.api.call(
            f"get statefulsets {self.statefulset}",
            self.api.apps.read_namespaced_stateful_set,
            self.statefulset,
            self.namespace,
        )
        pods = self.api.call(
            "list pods",
            self.api.core.list_namespaced_pod,
            self.namespace,
            label_selector=label_selector(sts.spec.selector.match_labels),
        )
        nodes = [n for n in (pod_node(p, self.statefulset) for p in pods.items or []) if n]
        nodes.sort(key=lambda n: n.ordinal)
        for node in nodes:
            if node.address:
                self._ordinals[node.address] = node.ordinal
        return nodes

    def ready_addresses(self) -> list[str]:
        """Addresses of the Ready pods: the controller meets any that is not a live
        member of the cluster (a rescheduled pod with a new IP or an empty nodes.conf)."""
        return [str(n.address) for n in self.pods() if n.ready and n.address]

    def ordinal(self, address: str) -> Any:
        if address not in self._ordinals:
            self.pods()
        # unknown addresses (not a pod of ours) sort first: they never leave by ordinal
        return self._ordinals.get(address, -1)

    # -- changing -----------------------------------------------------------------------

    def _patch_replicas(self, replicas: int) -> None:
        self.api.call(
            f"patch statefulsets/scale {self.statefulset}",
            self.api.apps.patch_namespaced_stateful_set_scale,
            self.statefulset,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )

    def add_nodes(self, count: int, existing: Sequence[str]) -> list[str]:
        """Raise replicas by ``count`` and wait for the new ordinals to be Ready; their
        addresses, by ordinal."""
        current = self.replicas()
        target = current + count
        self._patch_replicas(target)
        wanted = set(range(current, target))
        deadline = time.monotonic() + self.ready_timeout
        while True:
            ready = {n.ordinal: n for n in self.pods() if n.ordinal in wanted and n.ready}
            if len(ready) == len(wanted):
                return [str(ready[o].address) for o in sorted(wanted)]
            if time.monotonic() >= deadline:
                missing = sorted(wanted - set(ready))
                raise PlatformError(
                    f"StatefulSet {self.statefulset}: pods of ordinals {missing} not Ready "
                    f"within {self.ready_timeout:.0f}s"
                )
            self._sleep(self.poll_seconds)

    def remove_nodes(self, addresses: Sequence[str]) -> None:
        """Lower replicas past the leaving nodes (already drained, forgotten and proven
        empty), which must be the highest ordinals; then delete their PVCs."""
        if not addresses:
            return
        nodes = self.pods()
        by_address = {n.address: n for n in nodes if n.address}
        unknown = [a for a in addresses if a not in by_address]
        if unknown:
            raise PlatformError(f"StatefulSet {self.statefulset}: no pod has address {unknown}")
        leaving = sorted(by_address[a].ordinal for a in addresses)
        current = self.replicas()
        target = current - len(leaving)
        if leaving != list(range(target, current)):
            raise PlatformError(
                f"StatefulSet {self.statefulset} removes its highest ordinals "
                f"{list(range(target, current))}, but the leaving nodes are {leaving}"
            )
        self._patch_replicas(target)
        deadline = time.monotonic() + self.ready_timeout
        while any(n.ordinal >= target for n in self.pods()):
            if time.monotonic() >= deadline:
                raise PlatformError(
                    f"StatefulSet {self.statefulset}: pods >= {target} still exist after "
                    f"{self.ready_timeout:.0f}s"
                )
            self._sleep(self.poll_seconds)
        self._delete_claims(range(target, current))

    def _delete_claims(self, ordinals: range) -> None:
        """PVCs of removed ordinals (``<template>-<sts>-<n>``): a reused ordinal must start
        empty, never with the old ``nodes.conf``."""
        suffixes = {f"-{self.statefulset}-{o}" for o in ordinals}
        try:
            claims = self.api.call(
                "list persistentvolumeclaims",
                self.api.core.list_namespaced_persistent_volume_claim,
                self.namespace,
            )
        except KubeApiError as exc:
            log.warning("cannot list PVCs of %s: %s", self.statefulset, exc)
            return
        for claim in claims.items or []:
            name = _name(claim)
            if any(name.endswith(s) for s in suffixes):
                try:
                    self.api.call(
                        f"delete persistentvolumeclaims {name}",
                        self.api.core.delete_namespaced_persistent_volume_claim,
                        name,
                        self.namespace,
                    )
                except NotFound:
                    continue
