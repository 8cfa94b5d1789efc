"""The Kubernetes platform: the only code in slotpilot that imports ``kubernetes``.

``api`` (client, retries, error mapping), ``workloads`` (consumer Deployments and the
shard StatefulSet through the scale subresource), ``leader`` (Lease election) and
``events`` (core/v1 Events). Importing this package needs the ``kubernetes`` client,
a runtime dependency of slotpilot.
"""

from controller.platform.kubernetes.api import (
    Conflict,
    KubeApi,
    KubeApiError,
    NotFound,
    load_api_client,
)
from controller.platform.kubernetes.events import EventRecorder
from controller.platform.kubernetes.leader import LeaderElector
from controller.platform.kubernetes.workloads import KubernetesPlatform, StatefulSetNodes

__all__ = [
    "Conflict",
    "EventRecorder",
    "KubeApi",
    "KubeApiError",
    "KubernetesPlatform",
    "LeaderElector",
    "NotFound",
    "StatefulSetNodes",
    "load_api_client",
]
