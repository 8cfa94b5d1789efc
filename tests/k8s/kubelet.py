"""A "kubelet" for the emulated API: replica counts become real processes on 127.0.0.1.

The emulator (``tests/k8s/emulator.py``) stores StatefulSets and Deployments but runs
nothing. :class:`Kubelet` plays the StatefulSet/ReplicaSet controllers and the kubelet at
once: a background thread polls the workloads every ``interval`` and converges

- a **StatefulSet whose pod template has a container port named ``redis``**: one
  cluster-enabled server (``controller.localcluster.ServerNode``: the harness's settings,
  plus ``server_args``; the template's command is not used) per ordinal
  ``0..replicas-1``, Pods ``<sts>-<ordinal>``; scale-down removes the highest ordinals
  first; ``podManagementPolicy: OrderedReady`` (the default) creates one ordinal at a time,
  each after the lower ones are Ready, and removes nothing while a pod that stays is not
  Ready; ``Parallel`` all at once;
- a **Deployment** (or a StatefulSet without a ``redis`` port): one worker process per
  replica running ``worker_command`` (or the template's first container ``command`` +
  ``args``; a pod with neither is Ready without a process), Pods ``<deploy>-<random>``;
  scale-down deletes not-Ready pods first, then the lowest
  ``controller.kubernetes.io/pod-deletion-cost``, then the newest (as the ReplicaSet
  controller does).

Each Pod carries the template's labels, an owner reference, ``status.podIP`` and
``hostIP`` 127.0.0.1, the template's containers with the port named ``redis`` set to the
pod's own distinct port (a port named ``bus``/``cluster-bus``/``gossip`` to port + 10000),
phase Running and condition ``Ready=True`` once the server answers PING (a worker: once its
process runs). Workload ``status`` (replicas, readyReplicas, availableReplicas,
updatedReplicas, currentReplicas, observedGeneration) is written when it changes.

Storage: a StatefulSet with ``volumeClaimTemplates`` gets PVC objects
``<claim>-<sts>-<ordinal>`` (labelled with the pod template's labels, mounted by the pod as
``spec.volumes[].persistentVolumeClaim.claimName``); the server's data dir belongs to the
PVC (by uid), so a scaled-down-then-up ordinal comes back with its old ``nodes.conf``
unless the PVC was deleted (by the operator, or
``persistentVolumeClaimRetentionPolicy.whenScaled: Delete``).
Without claim templates every new Pod starts with an empty dir.

Scheduling: with ``capacity`` (or :meth:`Kubelet.set_capacity`) at most that many server pods
run; the others are Pods in phase ``Pending`` with ``PodScheduled=False`` reason
``Unschedulable`` and no IP or process, started in creation order as room frees.

Readiness: a Ready pod's server is PINGed every ``probe_period``; ``probe_failures`` misses
in a row (a hung, SIGSTOPped server) make it not Ready until it answers again.
Not emulated: rolling updates of a changed pod template, node affinity, resource limits.

Failures: a process that dies is restarted in place (same pod, port and dir, restartCount
+1, not Ready until it answers), as ``restartPolicy: Always`` does; a Pod deleted through the
API has its process stopped and is recreated (new uid, new port); :meth:`Kubelet.reschedule`
kills a pod's server and starts it again on a new port with an empty data dir under a new
Pod object, as when a pod moves to another node. Everything started is stopped by
:meth:`Kubelet.stop`. The kubelet talks to the store through :class:`KubeAPI`'s side door,
so faults injected on the HTTP API for the operator do not reach it.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from controller.localcluster import ClusterAuth, ServerNode, find_server_binary, free_port
from tests.k8s.emulator import KubeAPI

__all__ = ["Kubelet", "Member", "WorkerCommand", "pod_containers", "runs_redis"]

Obj = dict[str, Any]
WorkerCommand = Sequence[str] | Callable[[Obj], Sequence[str]]
STS, DEPLOY, PODS, PVCS = (
    "apps/v1/statefulsets",
    "apps/v1/deployments",
    "v1/pods",
    "v1/persistentvolumeclaims",
)
BUS_PORT_NAMES = {"bus", "cluster-bus", "gossip"}
# the client port's name: ours, and what other charts call it (Bitnami: tcp-redis)
REDIS_PORT_NAMES = {"redis", "tcp-redis"}
MAX_GRACE_SECONDS = 5.0


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the test process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _template(obj: Obj) -> Obj:
    return _spec(obj).get("template") or {}


def _containers(obj: Obj) -> list[Obj]:
    return list((_template(obj).get("spec") or {}).get("containers") or [])


def runs_redis(workload: Obj) -> bool:
    """A workload whose pod template exposes a container port named ``redis``."""
    return any(
        port.get("name") in REDIS_PORT_NAMES
        for c in _containers(workload)
        for port in c.get("ports") or []
    )


@dataclass
class Member:
    """One pod the kubelet runs: its API identity and its process."""

    namespace: str
    pod: str
    owner_kind: str
    owner: str
    port: int
    data_dir: Path
    uid: str = ""
    ordinal: int | None = None
    server: ServerNode | None = None
    worker: subprocess.Popen[bytes] | None = None
    command: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    restarts: int = 0
    ready_at: float | None = None
    probed_at: float = 0.0
    probe_failures: int = 0
    grace: float = MAX_GRACE_SECONDS
    created: float = field(default_factory=time.monotonic)
    scheduled: bool = True  # False: Pending (Unschedulable), no process

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        if self.server is not None:
            return self.server.running
        return self.worker is not None and self.worker.poll() is None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.server is not None:
            self.server.start()
        elif self.command:
            with open(self.data_dir / "worker.log", "ab") as log:
                self.worker = subprocess.Popen(
                    list(self.command), cwd=self.data_dir, env=self.env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )  # fmt: skip

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=self.grace)
        elif self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait(10)

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()
        elif self.worker is not None and self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait(10)

    def answers(self) -> bool:
        if self.server is None:
            return self.running() or not self.command
        try:
            with self.server.client(timeout=0.2, retry=Retry(NoBackoff(), 0)) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False


class Kubelet:
    """Polls the emulated workloads and makes their replica counts real processes."""

    def __init__(
        self,
        api: KubeAPI,
        workdir: str | Path,
        *,
        namespace: str | None = None,
        binary: str | None = None,
        server_args: Sequence[str] = (),
        auth: ClusterAuth | None = None,
        node_timeout_ms: int = 2000,
        worker_command: WorkerCommand | None = None,
        worker_env: dict[str, str] | None = None,
        interval: float = 0.1,
        probe_period: float = 0.5,
        probe_failures: int = 3,
        capacity: int | None = None,
    ) -> None:
        self.api = api
        self.workdir = Path(workdir)
        self.namespace = namespace
        self.binary = binary or find_server_binary()
        self.server_args = tuple(server_args)
        self.auth = auth
        self.node_timeout_ms = node_timeout_ms
        self.worker_command = worker_command
        self.worker_env = dict(worker_env or {})
        self.interval = interval
        self.probe_period = probe_period
        self.probe_failures = probe_failures
        self.capacity = capacity  # most server pods scheduled at once (None: no limit)
        self.errors: list[BaseException] = []
        self._members: dict[tuple[str, str], Member] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Kubelet:
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, then every process this kubelet started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._lock:
            for member in self._members.values():
                member.kill()
            self._members.clear()

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception as exc:  # kept for the test to see; the loop must go on
                self.errors.append(exc)
                del self.errors[:-20]

    # -- what tests use --------------------------------------------------------------

    def members(self, owner: str | None = None, namespace: str | None = None) -> list[Member]:
        """Running pods (optionally of one workload), StatefulSet ordinals in order."""
        with self._lock:
            found = [
                m for m in self._members.values()
                if (owner is None or m.owner == owner)
                and (namespace is None or m.namespace == namespace)
            ]  # fmt: skip
        return sorted(found, key=lambda m: (m.owner, m.ordinal or 0, m.created))

    def member(self, pod: str, namespace: str = "default") -> Member:
        with self._lock:
            return self._members[(namespace, pod)]

    def wait_ready(
        self, owner: str, replicas: int, namespace: str = "default", timeout: float = 20.0
    ) -> list[Member]:
        """Wait until ``owner`` has exactly ``replicas`` Ready pods and no others."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            members = self.members(owner, namespace)
            if len(members) == replicas and all(m.ready for m in members):
                return members
            time.sleep(0.05)
        raise TimeoutError(
            f"{namespace}/{owner}: wanted {replicas} ready pods, have "
            f"{[(m.pod, m.ready) for m in self.members(owner, namespace)]}; errors {self.errors}"
        )

    def set_capacity(self, capacity: int | None) -> None:
        """Room for this many server pods (None: no limit); Pending pods start as room frees."""
        with self._lock:
            self.capacity = capacity

    def crash(self, pod: str, namespace: str = "default") -> None:
        """SIGKILL a pod's process; the kubelet restarts it in place (same port and dir)."""
        with self._lock:
            self._members[(namespace, pod)].kill()

    def reschedule(self, pod: str, namespace: str = "default") -> Member:
        """Kill a pod's process and run it again as a new Pod: new port, empty data dir (a
        PVC-backed dir is emptied: the volume did not follow the pod)."""
        with self._lock:
            old = self._members.pop((namespace, pod))
            old.kill()
            shutil.rmtree(old.data_dir, ignore_errors=True)
            self.api.delete(PODS, namespace, pod)
            resource = STS if old.owner_kind == "StatefulSet" else DEPLOY
            workload = self.api.get(resource, namespace, old.owner)
            if workload is None:
                raise LookupError(f"{namespace}/{old.owner} is gone")
            return self._run_pod(workload, old.owner_kind, pod, old.ordinal)

    # -- reconcile -------------------------------------------------------------------

    def sync(self) -> None:
        """One pass: every workload's pods and processes towards its replica count."""
        with self._lock:
            pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p
                    for p in self.api.list(PODS, self.namespace)}  # fmt: skip
            self._forget_deleted_pods(pods)
            statefulsets = self.api.list(STS, self.namespace)
            deployments = self.api.list(DEPLOY, self.namespace)
            wanted = {("StatefulSet", w["metadata"]["namespace"], w["metadata"]["name"])
                      for w in statefulsets}  # fmt: skip
            wanted |= {("Deployment", w["metadata"]["namespace"], w["metadata"]["name"])
                       for w in deployments}  # fmt: skip
            for member in list(self._members.values()):
                if (member.owner_kind, member.namespace, member.owner) not in wanted:
                    self._remove(member)
            for sts in statefulsets:
                self._sync_statefulset(sts)
            for deploy in deployments:
                self._sync_deployment(deploy)
            self._check_health()
            for workload, kind in [(s, "StatefulSet") for s in statefulsets] + [
                (d, "Deployment") for d in deployments
            ]:
                self._write_status(workload, kind)

    def _forget_deleted_pods(self, pods: dict[tuple[str, str], Obj]) -> None:
        for key, member in list(self._members.items()):
            pod = pods.get(key)
            if pod is None or pod["metadata"].get("uid") != member.uid:
                member.stop()
                del self._members[key]

    def _remove(self, member: Member) -> None:
        member.stop()
        self._members.pop((member.namespace, member.pod), None)
        self.api.delete(PODS, member.namespace, member.pod)

    def _sync_statefulset(self, sts: Obj) -> None:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        replicas = int(_spec(sts).get("replicas", 1) or 0)
        ordered = _spec(sts).get("podManagementPolicy", "OrderedReady") != "Parallel"
        mine = {m.ordinal: m for m in self.members(name, ns) if m.owner_kind == "StatefulSet"}
        kept_unhealthy = [
            m for o, m in mine.items() if o is not None and o < replicas and not m.ready
        ]
        if ordered and kept_unhealthy and any(o is not None and o >= replicas for o in mine):
            # OrderedReady: nothing is removed while a pod that stays is not Running and
            # Ready (Pending, crash-looping, hung): the StatefulSet controller waits for it
            return
        for ordinal in sorted((o for o in mine if o is not None and o >= replicas), reverse=True):
            self._remove(mine[ordinal])
            if self._claims_deleted_on_scale(sts):
                for claim in self._claim_names(sts, ordinal):
                    self.api.delete(PVCS, ns, claim)
            if ordered:
                return
        for ordinal in range(replicas):
            member = mine.get(ordinal)
            if member is None:
                self._run_pod(sts, "StatefulSet", f"{name}-{ordinal}", ordinal)
                if ordered:
                    return
            elif ordered and not member.ready:
                return

    def _sync_deployment(self, deploy: Obj) -> None:
        ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        replicas = int(_spec(deploy).get("replicas", 1) or 0)
        mine = [m for m in self.members(name, ns) if m.owner_kind == "Deployment"]
        for _ in range(replicas - len(mine)):
            self._run_pod(deploy, "Deployment", f"{name}-{uuid.uuid4().hex[:5]}", None)
        if len(mine) > replicas:
            for member in sorted(mine, key=self._deletion_rank)[: len(mine) - replicas]:
                self._remove(member)

    def _deletion_rank(self, member: Member) -> tuple[bool, int, float]:
        pod = self.api.get(PODS, member.namespace, member.pod) or {}
        annotations = pod.get("metadata", {}).get("annotations") or {}
        try:
            cost = int(annotations.get("controller.kubernetes.io/pod-deletion-cost", 0))
        except ValueError:
            cost = 0
        return (member.ready, cost, -member.created)

    def _room(self) -> bool:
        if self.capacity is None:
            return True
        return sum(1 for m in self._members.values() if m.server and m.scheduled) < self.capacity

    def _check_health(self) -> None:
        now = time.monotonic()
        for member in sorted(self._members.values(), key=lambda m: m.created):
            if not member.scheduled:
                if self._room():  # capacity freed: the scheduler places the pod now
                    member.scheduled = True
                    member.start()
                    self._patch_pod_status(member)
                continue
            if not member.running() and (member.server is not None or member.command):
                member.restarts += 1
                member.ready = False
                member.start()
                self._patch_pod_status(member)
            elif not member.ready and member.answers():
                member.ready, member.ready_at, member.probe_failures = True, now, 0
                self._patch_pod_status(member)
            elif member.ready and now - member.probed_at >= self.probe_period:
                # The readiness probe: a hung (SIGSTOPped) server stops answering PING.
                member.probed_at = now
                member.probe_failures = 0 if member.answers() else member.probe_failures + 1
                if member.probe_failures >= self.probe_failures:
                    member.ready = False
                    self._patch_pod_status(member)

    # -- pods and storage ------------------------------------------------------------

    def _claim_names(self, sts: Obj, ordinal: int) -> list[str]:
        templates = _spec(sts).get("volumeClaimTemplates") or []
        name = sts["metadata"]["name"]
        return [f"{t['metadata']['name']}-{name}-{ordinal}" for t in templates]

    def _claims_deleted_on_scale(self, sts: Obj) -> bool:
        policy = _spec(sts).get("persistentVolumeClaimRetentionPolicy") or {}
        return bool(policy.get("whenScaled") == "Delete")

    def _data_dir(self, workload: Obj, pod: str, ordinal: int | None) -> Path:
        ns: str = workload["metadata"]["namespace"]
        claims = self._claim_names(workload, ordinal) if ordinal is not None else []
        if not claims:
            return self.workdir / "pods" / ns / f"{pod}-{uuid.uuid4().hex[:8]}"
        claim = self.api.get(PVCS, ns, claims[0])
        if claim is None:
            labels = (_template(workload).get("metadata") or {}).get("labels") or {}
            claim = self.api.create(PVCS, {
                "metadata": {"name": claims[0], "namespace": ns, "labels": dict(labels)},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}},
            })  # fmt: skip
            self.api.patch(PVCS, ns, claims[0], {"status": {"phase": "Bound"}})
        return self.workdir / "volumes" / ns / str(claim["metadata"]["uid"])

    def _command(self, workload: Obj) -> list[str]:
        if callable(self.worker_command):
            return list(self.worker_command(workload))
        if self.worker_command is not None:
            return list(self.worker_command)
        containers = _containers(workload)
        if not containers:
            return []
        return list(containers[0].get("command") or []) + list(containers[0].get("args") or [])

    def _env(self, workload: Obj, ns: str, pod: str) -> dict[str, str]:
        env = {k: v for k in ("PATH", "HOME", "LANG", "PYTHONPATH") if (v := os.environ.get(k))}
        for container in _containers(workload)[:1]:
            for item in container.get("env") or []:
                if "value" in item:
                    env[item["name"]] = str(item["value"])
        env.update(self.worker_env)
        env.update(POD_NAME=pod, POD_NAMESPACE=ns, POD_IP="127.0.0.1")
        return env

    def _run_pod(self, workload: Obj, kind: str, pod: str, ordinal: int | None) -> Member:
        ns, owner = workload["metadata"]["namespace"], workload["metadata"]["name"]
        grace = float((_template(workload).get("spec") or {}).get(
            "terminationGracePeriodSeconds", MAX_GRACE_SECONDS))  # fmt: skip
        member = Member(ns, pod, kind, owner, free_port(), self._data_dir(workload, pod, ordinal),
                        ordinal=ordinal, grace=min(grace, MAX_GRACE_SECONDS))  # fmt: skip
        if runs_redis(workload) and kind == "StatefulSet":
            member.server = ServerNode(
                port=member.port, workdir=member.data_dir, binary=self.binary,
                extra_args=self.server_args, auth=self.auth, node_timeout_ms=self.node_timeout_ms,
            )  # fmt: skip
        else:
            member.command = self._command(workload)
            member.env = self._env(workload, ns, pod)
        if member.server is not None and not self._room():
            member.scheduled = False  # Pending: no node has room for it
        else:
            member.start()
        created = self.api.create(PODS, self._pod_object(workload, kind, member))
        member.uid = created["metadata"]["uid"]
        self._members[(ns, pod)] = member
        return member

    def _pod_object(self, workload: Obj, kind: str, member: Member) -> Obj:
        meta = workload["metadata"]
        labels = dict((_template(workload).get("metadata") or {}).get("labels") or {})
        if member.ordinal is not None:
            labels["statefulset.kubernetes.io/pod-name"] = member.pod
            labels["apps.kubernetes.io/pod-index"] = str(member.ordinal)
        containers = []
        for container in _containers(workload) or [{"name": "main", "image": "local"}]:
            container = dict(container)
            ports = []
            for port in container.get("ports") or []:
                port = dict(port)
                if port.get("name") in REDIS_PORT_NAMES:
                    port["containerPort"] = member.port
                elif port.get("name") in BUS_PORT_NAMES:
                    port["containerPort"] = member.port + 10000
                ports.append(port)
            container["ports"] = ports
            containers.append(container)
        spec = dict(_template(workload).get("spec") or {}, containers=containers,
                    nodeName="127.0.0.1")  # fmt: skip
        if member.ordinal is not None:
            spec.update(hostname=member.pod, subdomain=_spec(workload).get("serviceName", ""))
            claims = self._claim_names(workload, member.ordinal)
            templates = _spec(workload).get("volumeClaimTemplates") or []
            volumes = [v for v in spec.get("volumes") or []]
            volumes += [{"name": t["metadata"]["name"], "persistentVolumeClaim": {"claimName": c}}
                        for t, c in zip(templates, claims, strict=True)]  # fmt: skip
            if volumes:
                spec["volumes"] = volumes
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": member.pod, "namespace": member.namespace, "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": meta["name"],
                                     "uid": meta.get("uid", ""), "controller": True}],
            },
            "spec": spec,
            "status": self._pod_status(member, containers),
        }  # fmt: skip

    def _pod_status(self, member: Member, containers: list[Obj]) -> Obj:
        ready = "True" if member.ready else "False"
        if not member.scheduled:
            return {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False",
                                "reason": "Unschedulable", "lastTransitionTime": _now(),
                                "message": "0/1 nodes are available: insufficient memory"}],
            }  # fmt: skip
        return {
            "phase": "Running" if member.ready or member.running() else "Pending",
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "hostIP": "127.0.0.1",
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": _now()},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": _now()},
            ],
            "containerStatuses": [
                {"name": c["name"], "ready": member.ready, "restartCount": member.restarts,
                 "image": c.get("image", "local"), "imageID": "", "started": member.running()}
                for c in containers
            ],
        }  # fmt: skip

    def _patch_pod_status(self, member: Member) -> None:
        pod = self.api.get(PODS, member.namespace, member.pod)
        if pod is not None and pod["metadata"]["uid"] == member.uid:
            status = self._pod_status(member, pod_containers(pod))
            self.api.patch(PODS, member.namespace, member.pod, {"status": status})

    def _write_status(self, workload: Obj, kind: str) -> None:
        ns, name = workload["metadata"]["namespace"], workload["metadata"]["name"]
        members = [m for m in self.members(name, ns) if m.owner_kind == kind]
        ready = sum(1 for m in members if m.ready)
        status = {
            "replicas": len(members), "readyReplicas": ready, "availableReplicas": ready,
            "updatedReplicas": len(members),
            "observedGeneration": workload["metadata"].get("generation", 1),
        }  # fmt: skip
        if kind == "StatefulSet":
            status["currentReplicas"] = len(members)
        current = workload.get("status") or {}
        if any(current.get(key) != value for key, value in status.items()):
            self.api.patch(STS if kind == "StatefulSet" else DEPLOY, ns, name, {"status": status})


def pod_containers(pod: Obj | None) -> list[Obj]:
    """The containers of a Pod object (empty for none)."""
    return list(((pod or {}).get("spec") or {}).get("containers") or [])
