"""The Kubernetes API calls the operator is allowed to make, as data: one source of truth.

The Role in ``deploy/manifests/role.yaml`` (and later the Helm chart) is checked against
:data:`RBAC_RULES` by a test, so a verb granted and never used, or used and never granted,
fails the suite instead of surfacing as a 403 in someone's cluster. The Kubernetes platform
names the rule it needed when the API answers 403 (:func:`missing_rule_message`). Pure
data, no ``kubernetes`` import, so the tests and the chart generator can read it anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RBAC_RULES", "RBACRule", "missing_rule_message", "role_rules", "rule_for"]


@dataclass(frozen=True)
class RBACRule:
    """One (API group, resource, verbs) grant and why the operator needs it.

    ``api_group`` is ``""`` for the core group; ``resource`` may name a subresource
    (``statefulsets/scale``), exactly as a Role's ``resources`` entry does."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    why: str

    def grants(self, api_group: str, resource: str, verb: str) -> bool:
        """Whether this rule allows ``verb`` on ``resource`` of ``api_group``."""
        return (self.api_group, self.resource) == (api_group, resource) and verb in self.verbs


RBAC_RULES: tuple[RBACRule, ...] = (
    RBACRule(
        "apps", "statefulsets/scale", ("get", "patch", "update"),
        "read and change a shard StatefulSet's replicas through the scale subresource",
    ),
    RBACRule(
        "apps", "deployments/scale", ("get", "patch", "update"),
        "read and change a consumer Deployment's replicas through the scale subresource",
    ),
    RBACRule(
        "apps", "statefulsets", ("get", "list", "watch", "patch"),
        "find a shard StatefulSet and its selector; keep the intent record in an annotation",
    ),
    RBACRule(
        "apps", "deployments", ("get", "list", "watch", "patch"),
        "find a consumer Deployment; keep its last scale times in an annotation",
    ),
    RBACRule(
        "", "pods", ("get", "list", "watch"),
        "map each shard pod (IP, port named redis, ordinal, readiness) to its cluster node",
    ),
    RBACRule(
        "", "persistentvolumeclaims", ("get", "delete"),
        "delete a removed ordinal's claims (by exact name, checked first) so a reused "
        "ordinal never starts with an old nodes.conf",
    ),
    RBACRule(
        "coordination.k8s.io", "leases", ("get", "create", "update"),
        "leader election: only the Lease holder reconciles and moves slots",
    ),
    RBACRule(
        "", "events", ("create", "patch"),
        "report scaling, gates, migrations and node replacement on the workload (patch: repeats)",
    ),
    RBACRule(
        "autoscaling", "horizontalpodautoscalers", ("get", "list"),
        "refuse to scale a Deployment that an HPA also scales",
    ),
    RBACRule(
        "keda.sh", "scaledobjects", ("get", "list"),
        "refuse to scale a Deployment that a KEDA ScaledObject also scales",
    ),
)  # fmt: skip


def rule_for(api_group: str, resource: str, verb: str) -> RBACRule | None:
    """The rule of :data:`RBAC_RULES` that grants this call, or None if none does."""
    return next((r for r in RBAC_RULES if r.grants(api_group, resource, verb)), None)


def missing_rule_message(api_group: str, resource: str, verb: str) -> str:
    """What to tell the user when the API answered 403 to this call: the Role rule to add."""
    group = api_group or '""'
    needed = f"apiGroups: [{group}], resources: [{resource}], verbs: [{verb}]"
    rule = rule_for(api_group, resource, verb)
    why = f" (used to {rule.why})" if rule else ""
    return f"forbidden: the operator's Role needs {needed}{why}; see deploy/manifests/role.yaml"


def role_rules() -> list[dict[str, Any]]:
    """:data:`RBAC_RULES` as a Role's ``rules`` list, one entry per (group, resource)."""
    return [
        {"apiGroups": [r.api_group], "resources": [r.resource], "verbs": list(r.verbs)}
        for r in RBAC_RULES
    ]
