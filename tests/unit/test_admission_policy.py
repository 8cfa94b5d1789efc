"""The ValidatingAdmissionPolicy that keeps the shard StatefulSet's replicas the
operator's alone, as shipped (deploy/manifests and the Helm chart): its CEL expression is
evaluated (cel-python) against the requests an API server would send it, and its binding
is checked to cover the scale subresource of exactly the managed StatefulSet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
Doc = dict[str, Any]


def _plain() -> list[Doc]:
    text = (ROOT / "deploy" / "manifests" / "admission-policy.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def _chart() -> list[Doc]:
    helm_python = pytest.importorskip("helm_python")
    chart = helm_python.Chart.load(ROOT / "helm" / "slotpilot")
    try:
        rendered = chart.render({}, name="demo", namespace="queues")
    finally:
        chart.close()
    text = rendered["slotpilot/templates/admission-policy.yaml"]
    return [d for d in yaml.safe_load_all(text) if d]


# (source, the operator's account, its namespace, the StatefulSet's name)
SHIPPED = {
    "manifests": (_plain, "system:serviceaccount:cache-ns:slotpilot", "cache-ns",
                  "redis-cluster"),
    "chart": (_chart, "system:serviceaccount:queues:demo-slotpilot", "queues", "redis-cluster"),
}  # fmt: skip


def _allows(policy: Doc, user: str, namespace: str, old: Doc, new: Doc) -> bool:
    env = celpy.Environment()
    activation = {
        "request": celpy.json_to_cel({"userInfo": {"username": user}, "namespace": namespace}),
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
    }
    for validation in policy["spec"]["validations"]:
        program = env.program(env.compile(validation["expression"]))
        if not bool(program.evaluate(activation)):
            return False
    return True


def _sts(replicas: int | None, image: str = "valkey:9.1") -> Doc:
    spec: Doc = {"template": {"spec": {"containers": [{"name": "v", "image": image}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": spec}


def _scale(replicas: int) -> Doc:
    return {"apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": replicas}}


@pytest.mark.parametrize("source", sorted(SHIPPED))
def test_only_the_operator_changes_the_replicas(source: str) -> None:
    load, operator, namespace, _ = SHIPPED[source]
    (policy,) = [d for d in load() if d["kind"] == "ValidatingAdmissionPolicy"]
    someone = "kubernetes-admin"
    argo = "system:serviceaccount:argocd:argocd-application-controller"
    # the operator scales, through the subresource or the object
    assert _allows(policy, operator, namespace, _scale(10), _scale(6))
    assert _allows(policy, operator, namespace, _sts(6), _sts(10))
    # kubectl scale, a GitOps sync of `replicas: 6`, an apply that drops the field
    assert not _allows(policy, someone, namespace, _scale(10), _scale(6))
    assert not _allows(policy, argo, namespace, _sts(10), _sts(6))
    assert not _allows(policy, someone, namespace, _sts(10), _sts(None))
    # the same account name in another namespace is not the operator
    other = operator.replace(f":{namespace}:", ":elsewhere:")
    assert not _allows(policy, other, namespace, _scale(10), _scale(6))
    # everything but the replicas stays anyone's to change
    assert _allows(policy, argo, namespace, _sts(10), _sts(10, image="valkey:9.2"))
    assert _allows(policy, someone, namespace, _sts(None), _sts(None, image="valkey:9.2"))


@pytest.mark.parametrize("source", sorted(SHIPPED))
def test_the_binding_covers_the_scale_subresource_of_the_managed_statefulset(source: str) -> None:
    load, _, _, statefulset = SHIPPED[source]
    docs = load()
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    for rules in (policy["spec"]["matchConstraints"]["resourceRules"],
                  binding["spec"]["matchResources"]["resourceRules"]):  # fmt: skip
        (rule,) = rules
        assert set(rule["resources"]) == {"statefulsets", "statefulsets/scale"}
        assert rule["operations"] == ["UPDATE"] and rule["apiGroups"] == ["apps"]
    (rule,) = binding["spec"]["matchResources"]["resourceRules"]
    assert rule["resourceNames"] == [statefulset]
