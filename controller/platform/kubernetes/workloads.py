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

from kubernetes import client

from controller.platform.base import Member, PlatformError
from controller.platform.kubernetes.api import KubeApi, NotFound

__all__ = [
    "KubernetesPlatform",
    "LeavingRefused",
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


class LeavingRefused(PlatformError):
    """The StatefulSet cannot remove the nodes a scale-in would drain; nothing moved."""

    gate = "scale_in_ordinals"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class PodNode:
    """A pod seen as a cluster node: ordinal, address (pod IP + ``redis`` port), ready,
    and why it is not Ready (Pending and its reason, crash-looping, not Ready)."""

    __slots__ = ("address", "name", "ordinal", "ready", "reason")

    def __init__(
        self, name: str, ordinal: int, address: str | None, ready: bool, reason: str = ""
    ) -> None:
        self.name = name
        self.ordinal = ordinal
        self.address = address
        self.ready = ready
        self.reason = reason or ("Ready" if ready else "not Ready")

    def __repr__(self) -> str:
        return f"PodNode({self.name}, {self.address}, ready={self.ready})"


def pod_node(pod: Any, statefulset: str, port_name: str = REDIS_PORT_NAME) -> PodNode | None:
    """Map a StatefulSet's pod to its node (address: pod IP + the container port named
    ``port_name``); None for a pod that is not ``<sts>-<n>``."""
    name = pod.metadata.name or ""
    prefix, _, suffix = name.rpartition("-")
    if prefix != statefulset or not suffix.isdigit():
        return None
    port = None
    for container in pod.spec.containers if pod.spec else []:
        for declared in container.ports or []:
            if declared.name == port_name:
                port = declared.container_port
    ip = pod.status.pod_ip if pod.status else None
    address = f"{ip}:{port}" if ip and port else None
    return PodNode(name, int(suffix), address, _ready(pod) and address is not None, _why(pod))


def _why(pod: Any) -> str:
    """A short reason a pod is not serving: ``Pending: Unschedulable``, ``CrashLoopBackOff``,
    ``Terminating``, ``not Ready``; ``Ready`` when it is."""
    status = pod.status
    if pod.metadata.deletion_timestamp:
        return "Terminating"
    if status is None:
        return "no status"
    for container in status.container_statuses or []:
        waiting = container.state.waiting if container.state is not None else None
        if waiting is not None and waiting.reason:
            return str(waiting.reason)
    if status.phase == "Pending":
        scheduled = next((c for c in status.conditions or [] if c.type == "PodScheduled"), None)
        if scheduled is not None and scheduled.status == "False" and scheduled.reason:
            return f"Pending: {scheduled.reason}"
        return "Pending"
    return "Ready" if _ready(pod) else "not Ready"


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
        port_name: str = REDIS_PORT_NAME,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.statefulset = statefulset
        self.port_name = port_name
        self.ready_timeout = ready_timeout
        self.poll_seconds = poll_seconds
        self._sleep = sleep
        self._ordinals: dict[str, int] = {}
        self.keep_going: Callable[[], bool] = lambda: True  # the controller's may_act

    def _wait(self, what: str) -> None:
        """One poll interval of a wait, unless the controller may no longer act."""
        if not self.keep_going():
            raise PlatformError(
                f"StatefulSet {self.statefulset}: stopped waiting for {what}: shutting down "
                "or no longer the leader (the next leader resumes)"
            )
        self._sleep(self.poll_seconds)

    # -- reading ------------------------------------------------------------------------

    def replicas(self) -> int:
        scale = self.api.call(
            f"get statefulsets/scale {self.statefulset}",
            self.api.apps.read_namespaced_stateful_set_scale,
            self.statefulset,
            self.namespace,
        )
        return int(scale.spec.replicas or 0) if scale.spec else 0

    def _statefulset(self) -> Any:
        return self.api.call(
            f"get statefulsets {self.statefulset}",
            self.api.apps.read_namespaced_stateful_set,
            self.statefulset,
            self.namespace,
        )

    def size(self) -> int | None:
        """The StatefulSet's ``spec.replicas``: the nodes it declares."""
        return self.replicas()

    def pending(self) -> list[str]:
        """The StatefulSet's Pending pods (unschedulable, waiting for a volume, …)."""
        return [f"{n.name} ({n.reason})" for n in self.pods() if n.reason.startswith("Pending")]

    def pods(self, sts: Any = None) -> list[PodNode]:
        """The StatefulSet's pods (by its selector) as nodes, by ordinal."""
        sts = sts if sts is not None else self._statefulset()
        pods = self.api.call(
            "list pods",
            self.api.core.list_namespaced_pod,
            self.namespace,
            label_selector=label_selector(sts.spec.selector.match_labels),
        )
        found = (pod_node(p, self.statefulset, self.port_name) for p in pods.items or [])
        nodes = [n for n in found if n]
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
        """Scale to an absolute size — the ordinal after the highest member of
        ``existing`` (the cluster's live nodes), plus ``count`` — and wait for those new
        ordinals to be Ready; their addresses, by ordinal.

        The size is derived from the cluster, never from the current replica count, so a
        resumed or repeated call asks for the same size again instead of growing it. When
        the new pods are not Ready in time (Pending: no capacity, an image that does not
        pull), the StatefulSet is scaled back to the members, the never-joined ordinals'
        claims are deleted, and :class:`PlatformError` says which pods and why."""
        members = [o for o in (self.ordinal(a) for a in existing) if o >= 0]
        base = max(members) + 1 if members else 0
        target = base + count
        if self.replicas() < target:
            self._patch_replicas(target)
        wanted = set(range(base, target))
        deadline = time.monotonic() + self.ready_timeout
        while True:
            pods = {n.ordinal: n for n in self.pods() if n.ordinal in wanted}
            ready = {o: n for o, n in pods.items() if n.ready}
            if len(ready) == len(wanted):
                return [str(ready[o].address) for o in sorted(wanted)]
            if time.monotonic() >= deadline:
                waiting = [f"{self.statefulset}-{o} ({pods[o].reason if o in pods else 'no pod'})"
                           for o in sorted(wanted - set(ready))]  # fmt: skip
                self._roll_back(base)
                raise PlatformError(
                    f"StatefulSet {self.statefulset}: pods not Ready within "
                    f"{self.ready_timeout:.0f}s: {', '.join(waiting)}; scaled back to {base}"
                )
            self._wait(f"pods of ordinals {sorted(wanted - set(ready))} to be Ready")

    def _roll_back(self, base: int) -> None:
        """Scale back to ``base`` (the new ordinals never joined the cluster) and delete
        the claims those ordinals got, once their pods are gone."""
        current = self.replicas()
        if current <= base:
            return
        self._patch_replicas(base)
        deadline = time.monotonic() + self.ready_timeout
        while any(n.ordinal >= base for n in self.pods()):
            if time.monotonic() >= deadline or not self.keep_going():
                return  # the claims stay; a later scale-out reuses those ordinals
            self._sleep(self.poll_seconds)
        self._delete_claims(range(base, current))

    def check_leaving(self, addresses: Sequence[str]) -> None:
        """Refuse (before anything moves) a leaving set the StatefulSet cannot remove:
        it must be exactly its highest ordinals, all Ready; with ``OrderedReady`` the
        StatefulSet removes nothing while any of its pods is not Ready."""
        if not addresses:
            return
        sts = self._statefulset()
        nodes = self.pods(sts)
        by_address = {n.address: n for n in nodes if n.address}
        current = self.replicas()
        problems: list[str] = []
        unknown = sorted(a for a in addresses if a not in by_address)
        if unknown:
            problems.append(f"no pod of StatefulSet {self.statefulset} has address {unknown}")
        leaving = sorted(by_address[a].ordinal for a in addresses if a in by_address)
        highest = list(range(current - len(addresses), current))
        if not unknown and leaving != highest:
            problems.append(
                f"StatefulSet {self.statefulset} removes its highest ordinals {highest} "
                f"(spec.replicas {current}), but the leaving nodes are ordinals {leaving}"
            )
        not_ready = [n for n in nodes if n.ordinal in set(highest) and not n.ready]
        if (sts.spec.pod_management_policy or "OrderedReady") == "OrderedReady":
            not_ready = [n for n in nodes if not n.ready]
        if not_ready:
            problems.append(
                f"pods not Ready: {', '.join(f'{n.name} ({n.reason})' for n in not_ready)}; "
                "the StatefulSet would not remove the leaving pods while they are not Ready"
            )
        if problems:
            raise LeavingRefused(problems)

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
            self._wait(f"pods >= {target} to be gone")
        self._delete_claims(range(target, current))

    def _delete_claims(self, ordinals: range) -> None:
        """The PVCs of removed ordinals, by their exact names ``<template>-<sts>-<n>``
        from the StatefulSet's ``volumeClaimTemplates`` (a reused ordinal must start
        empty, never with the old ``nodes.conf``). A claim is deleted only when it
        carries the StatefulSet's selector labels and no pod mounts it, with a ``uid``
        precondition (a claim re-created meanwhile is not the one checked); anything
        else raises :class:`PlatformError` — the scale-in is not done until it is."""
        sts = self._statefulset()
        templates = [t.metadata.name for t in sts.spec.volume_claim_templates or []
                     if t.metadata is not None and t.metadata.name]  # fmt: skip
        if not templates:
            return
        selector = dict(sts.spec.selector.match_labels or {})
        mounted = self._mounted_claims()
        refused: list[str] = []
        for name in sorted(f"{t}-{self.statefulset}-{o}" for t in templates for o in ordinals):
            try:
                claim = self.api.call(
                    f"get persistentvolumeclaims {name}",
                    self.api.core.read_namespaced_persistent_volume_claim,
                    name,
                    self.namespace,
                )
            except NotFound:
                continue
            meta = claim.metadata or client.V1ObjectMeta()
            labels = dict(meta.labels or {})
            if any(labels.get(k) != v for k, v in selector.items()):
                refused.append(f"{name} lacks the StatefulSet's labels {selector}")
                continue
            if name in mounted:
                refused.append(f"{name} is still mounted by pod {mounted[name]}")
                continue
            try:
                self.api.call(
                    f"delete persistentvolumeclaims {name}",
                    self.api.core.delete_namespaced_persistent_volume_claim,
                    name,
                    self.namespace,
                    body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=meta.uid)),
                )
            except NotFound:
                continue
        if refused:
            raise PlatformError(
                f"StatefulSet {self.statefulset}: claims left in place: {'; '.join(refused)}"
            )

    def _mounted_claims(self) -> dict[str, str]:
        """Claim name -> a pod of the namespace that mounts it."""
        pods = self.api.call("list pods", self.api.core.list_namespaced_pod, self.namespace)
        mounted: dict[str, str] = {}
        for pod in pods.items or []:
            for volume in (pod.spec.volumes or []) if pod.spec else []:
                source = volume.persistent_volume_claim
                if source is not None and source.claim_name:
                    mounted[str(source.claim_name)] = _name(pod)
        return mounted
