"""Everything ``slotpilot run`` needs on Kubernetes, built from the config in one place.

The API client (in-cluster or kubeconfig), the consumer platform, the shard node source,
the leader elector, the Event recorder and the intent store share one :class:`KubeApi`
(one connection pool, one breaker: when the API server is away, every part holds).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from controller.config import SlotpilotConfig
from controller.leadership import LeaderTiming
from controller.platform.kubernetes.api import KubeApi, load_api_client
from controller.platform.kubernetes.events import EventRecorder
from controller.platform.kubernetes.intent_store import IntentAnnotation
from controller.platform.kubernetes.leader import LeaderElector
from controller.platform.kubernetes.workloads import KubernetesPlatform, StatefulSetNodes

__all__ = ["KubernetesRuntime", "build_runtime", "identity", "namespace"]

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def namespace(configured: str | None) -> str:
    """The configured namespace, else the pod's own (``POD_NAMESPACE`` from the downward
    API, or the service account's namespace file), else ``default``."""
    if configured:
        return configured
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return _SA_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def identity() -> str:
    """Who holds the Lease: the pod name (``POD_NAME``), else host:pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class KubernetesRuntime:
    api: KubeApi
    namespace: str
    platform: KubernetesPlatform
    nodes: StatefulSetNodes | None
    elector: LeaderElector
    events: EventRecorder
    intent: IntentAnnotation | None

    def close(self) -> None:
        self.elector.stop(release=True)
        self.api.client.close()  # type: ignore[no-untyped-call]


def build_runtime(cfg: SlotpilotConfig, host: str | None = None) -> KubernetesRuntime:
    """``host``: an API server URL (tests); else in-cluster config or a kubeconfig."""
    k8s = cfg.kubernetes
    api = KubeApi(
        load_api_client(k8s.kubeconfig, host=host), request_timeout=k8s.api_timeout_seconds
    )
    ns = namespace(k8s.namespace)
    who = identity()
    timing = LeaderTiming(k8s.lease_seconds, k8s.renew_deadline_seconds, k8s.retry_seconds)
    sts = k8s.statefulset
    return KubernetesRuntime(
        api=api,
        namespace=ns,
        platform=KubernetesPlatform(api, ns),
        nodes=StatefulSetNodes(api, ns, sts, port_name=k8s.redis_port_name) if sts else None,
        elector=LeaderElector(api, ns, k8s.lease_name, who, timing),
        events=EventRecorder(api, ns, host=who),
        intent=IntentAnnotation(api, ns, sts) if sts else None,
    )
