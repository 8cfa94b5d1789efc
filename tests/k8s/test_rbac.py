"""The Role the Helm chart renders, enforced by the emulated API server (as its RBAC
authorizer would), against every call the operator makes: leader election, consumer
scaling, the shard StatefulSet (scale, pods, claims, intent annotation) and Events. None
is refused; a call outside the Role is, and its error names the rule and the files that
grant it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.intent import IntentRecord
from controller.platform.kubernetes import (
    EventRecorder,
    KubeApi,
    KubeApiError,
    KubernetesPlatform,
    LeaderElector,
    StatefulSetNodes,
)
from controller.platform.kubernetes.intent_store import IntentAnnotation
from tests.k8s.api_rules import rbac_allows, request_verb
from tests.k8s.emulator import KubeAPI
from tests.k8s.test_kubelet import redis_statefulset, worker_deployment

try:
    import helm_python
except Exception as exc:  # an OSError from ctypes, an ImportError, a wrong libc ...
    pytest.skip(f"helm-python-sdk cannot load here: {exc!r}", allow_module_level=True)

NS = "default"
CHART = Path(__file__).resolve().parents[2] / "helm" / "slotpilot"
VALUES = {
    "config": {
        "consumers": [{"name": "worker", "source": {"type": "redis_list", "key": "jobs"}}],
        "kubernetes": {"statefulset": "cache", "lease_name": "slotpilot"},
    }
}


def chart_role_rules(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="ops", namespace=NS)
    docs = [d for path, text in rendered.items() if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]  # fmt: skip
    (role,) = [d for d in docs if d.get("kind") == "Role"]
    return list(role["rules"])


@pytest.fixture
def operator(k8s_api: KubeAPI) -> Iterator[KubeApi]:
    """An API client bound to the chart's Role (token "operator")."""
    k8s_api.enforce_rbac("operator", chart_role_rules(VALUES))
    with k8s_api.client(token="operator") as api_client:
        yield KubeApi(api_client, backoff_base=0.01, backoff_cap=0.05, request_timeout=3)


def test_rbac_rules_as_the_authorizer_reads_them() -> None:
    rules = [{"apiGroups": ["apps"], "resources": ["deployments/scale"],
              "resourceNames": ["worker"], "verbs": ["get", "patch"]},
             {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]  # fmt: skip
    assert rbac_allows(rules, "apps", "deployments/scale", "patch", "worker")
    assert not rbac_allows(rules, "apps", "deployments/scale", "patch", "other")
    assert not rbac_allows(rules, "apps", "deployments", "get", "worker")  # not the subresource
    assert rbac_allows(rules, "", "events", "create", None)
    assert not rbac_allows(rules, "events.k8s.io", "events", "create", None)
    assert request_verb("GET", None, {"watch": "true"}) == "watch"
    assert request_verb("GET", "x", {}) == "get" and request_verb("GET", None, {}) == "list"
    assert request_verb("DELETE", None, {}) == "deletecollection"


def test_every_call_of_the_operator_is_granted_by_the_charts_role(
    k8s_api: KubeAPI, operator: KubeApi
) -> None:
    sts = redis_statefulset("cache", claims=True)
    sts["metadata"]["namespace"] = NS
    k8s_api.create("apps/v1/statefulsets", sts)
    k8s_api.create("apps/v1/deployments", {**worker_deployment("worker"), "metadata": {
        "name": "worker", "namespace": NS, "labels": {"app": "worker"}}})  # fmt: skip
    k8s_api.create("v1/persistentvolumeclaims", {"metadata": {
        "name": "data-cache-0", "namespace": NS, "labels": {"app": "cache"}}})  # fmt: skip

    elector = LeaderElector(operator, NS, "slotpilot", "pod-a")
    assert elector.step() and elector.step()  # create, then get + update
    platform = KubernetesPlatform(operator, NS)
    platform.set_replicas("worker", 2)  # lists HPAs and ScaledObjects, patches the scale
    assert platform.get_replicas("worker") == 2
    assert platform.members("worker") == []
    nodes = StatefulSetNodes(operator, NS, "cache")
    assert nodes.replicas() == 0 and nodes.pods() == []
    nodes._delete_claims(range(0, 1))
    intent = IntentAnnotation(operator, NS, "cache")
    intent.save(IntentRecord(holder="pod-a"))
    assert intent.load() == IntentRecord(holder="pod-a")
    events = EventRecorder(operator, NS, host="pod-a")
    for _ in range(2):  # create (after reading the uid), then patch
        events.record("StatefulSet", "cache", "ScaledUp", "3 -> 4")
        events.record("Deployment", "worker", "ScaledUp", "0 -> 2")
    elector.release()

    refused = [(r.verb, r.path) for r in k8s_api.requests() if r.status == 403]
    assert not refused, refused
    assert events.failures == 0
    assert k8s_api.get("v1/persistentvolumeclaims", NS, "data-cache-0") is None


def test_a_call_outside_the_role_is_refused_with_the_rule_and_the_files(
    k8s_api: KubeAPI, operator: KubeApi
) -> None:
    k8s_api.create("apps/v1/deployments", {**worker_deployment("other"), "metadata": {
        "name": "other", "namespace": NS, "labels": {"app": "other"}}})  # fmt: skip
    with pytest.raises(KubeApiError) as refused:
        KubernetesPlatform(operator, NS).get_replicas("other")  # not a configured consumer
    message = str(refused.value)
    assert refused.value.status == 403
    assert "resources: [deployments/scale], verbs: [get]" in message
    assert "resourceNames including other" in message
    assert "deploy/manifests/role.yaml" in message
    assert "helm/slotpilot/templates/role.yaml" in message
    with pytest.raises(KubeApiError, match=r"resources: \[deployments\], verbs: \[patch\]"):
        operator.call("patch deployments other", operator.apps.patch_namespaced_deployment,
                      "other", NS, {"metadata": {"labels": {"x": "y"}}})  # fmt: skip
