"""The Kubernetes API calls the operator makes, and the Role that grants exactly those.

:data:`RBAC_RULES` is the one source of truth for the Role in
``deploy/manifests/role.yaml`` and the Helm chart's ``templates/role.yaml``. Tests keep
all three equal, and keep :data:`RBAC_RULES` equal to the calls the platform code
makes, both ways: every client method named in ``controller/platform/kubernetes``
(read by :func:`call_rule`, the same mapping :meth:`KubeApi.call` uses to name a
refused call) must be granted, and every granted verb must be called. Where the
object's name is known from the config (the Lease, the StatefulSet, the consumer
Deployments) the rule carries ``resourceNames`` (:func:`role_rules`); ``create`` and
``list`` cannot be narrowed that way. Pure data, no ``kubernetes`` import, so tests and
the chart checks read it anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "RBAC_RULES",
    "ROLE_FILES",
    "RBACRule",
    "call_rule",
    "missing_rule_message",
    "role_rules",
    "rule_for",
    "targets_of",
]

# Where the Role is written down: what a 403 message points at.
ROLE_FILES = ("deploy/manifests/role.yaml", "helm/slotpilot/templates/role.yaml")

Target = Literal["lease", "statefulset", "consumers"]
Call = tuple[str, str, str]  # (API group, resource, verb)


@dataclass(frozen=True)
class RBACRule:
    """One (API group, resource, verbs) grant and why the operator needs it.

    ``api_group`` is ``""`` for the core group; ``resource`` may name a subresource
    (``statefulsets/scale``), exactly as a Role's ``resources`` entry does. ``names``:
    which configured objects the rule is narrowed to (``resourceNames``), if any."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    names: Target | None = None

    def grants(self, api_group: str, resource: str, verb: str) -> bool:
        """Whether this rule allows ``verb`` on ``resource`` of ``api_group`` (on the
        objects it names, if it names any)."""
        return (self.api_group, self.resource) == (api_group, resource) and verb in self.verbs


RBAC_RULES: tuple[RBACRule, ...] = (
    RBACRule(
        "apps", "statefulsets/scale", ("get", "patch"),
        "read and change the shard StatefulSet's replicas through the scale subresource",
        names="statefulset",
    ),
    RBACRule(
        "apps", "statefulsets", ("get", "patch"),
        "the shard StatefulSet's selector and uid; keep the intent record in an annotation",
        names="statefulset",
    ),
    RBACRule(
        "apps", "deployments/scale", ("get", "patch"),
        "read and change a consumer Deployment's replicas through the scale subresource",
        names="consumers",
    ),
    RBACRule(
        "apps", "deployments", ("get",),
        "a consumer Deployment's selector (its pods) and uid (its Events)",
        names="consumers",
    ),
    RBACRule(
        "", "pods", ("list",),
        "map each shard pod (IP, port named redis, ordinal, readiness) to its cluster node",
    ),
    RBACRule(
        "", "persistentvolumeclaims", ("get", "delete"),
        "delete a removed ordinal's claims (by exact name, checked first) so a reused "
        "ordinal never starts with an old nodes.conf",
    ),
    RBACRule(
        "coordination.k8s.io", "leases", ("create",),
        "leader election: create the Lease the first time",
    ),
    RBACRule(
        "coordination.k8s.io", "leases", ("get", "update"),
        "leader election: only the Lease holder reconciles and moves slots",
        names="lease",
    ),
    RBACRule(
        "", "events", ("create", "patch"),
        "report scaling, gates, migrations and node replacement on the workload (patch: repeats)",
    ),
    RBACRule(
        "autoscaling", "horizontalpodautoscalers", ("list",),
        "refuse to scale a Deployment that an HPA also scales",
    ),
    RBACRule(
        "keda.sh", "scaledobjects", ("list",),
        "refuse to scale a Deployment that a KEDA ScaledObject also scales",
    ),
)  # fmt: skip

# -- the calls, read from client method names ---------------------------------------------

_VERBS = {"read": "get", "list": "list", "create": "create", "patch": "patch", "replace": "update",
          "delete": "delete", "delete_collection": "deletecollection"}  # fmt: skip
_RESOURCES = {
    "deployment": ("apps", "deployments"), "deployment_scale": ("apps", "deployments/scale"),
    "stateful_set": ("apps", "statefulsets"), "stateful_set_scale": ("apps", "statefulsets/scale"),
    "pod": ("", "pods"), "event": ("", "events"),
    "persistent_volume_claim": ("", "persistentvolumeclaims"),
    "lease": ("coordination.k8s.io", "leases"),
    "horizontal_pod_autoscaler": ("autoscaling", "horizontalpodautoscalers"),
}  # fmt: skip
_METHOD = re.compile(
    r"^(read|list|create|patch|replace|delete_collection|delete)_namespaced_(\w+)$"
)


def call_rule(method: str, strings: Sequence[str] = ()) -> Call | None:
    """(group, resource, verb) of a ``kubernetes`` client method such as
    ``patch_namespaced_stateful_set_scale``; for ``*_namespaced_custom_object`` the group
    and plural come from the call's string arguments (``strings``). None: not an API call
    this mapping knows (``("?", name, verb)`` for an unknown resource)."""
    match = _METHOD.match(method)
    if match is None:
        return None
    verb, name = _VERBS[match.group(1)], match.group(2)
    if name == "custom_object":
        group = next((s for s in strings if "." in s), "?")
        return (group, strings[-1] if strings else "?", verb)
    group, resource = _RESOURCES.get(name, ("?", name))
    return (group, resource, verb)


def rule_for(api_group: str, resource: str, verb: str) -> RBACRule | None:
    """The rule of :data:`RBAC_RULES` that grants this call, or None if none does."""
    return next((r for r in RBAC_RULES if r.grants(api_group, resource, verb)), None)


def missing_rule_message(api_group: str, resource: str, verb: str, name: str = "") -> str:
    """What to tell the user when the API answered 403 to this call: the Role rule it
    needs, why, and the files that write the Role down."""
    group = api_group or '""'
    needed = f"apiGroups: [{group}], resources: [{resource}], verbs: [{verb}]"
    rule = rule_for(api_group, resource, verb)
    why = f" (used to {rule.why})" if rule else ""
    if rule is not None and rule.names is not None and name:
        needed += f", resourceNames including {name} (config: {rule.names})"
    return (
        f"forbidden: the operator's RBAC Role needs {needed}{why}; see {ROLE_FILES[0]} "
        f"(Helm: {ROLE_FILES[1]})"
    )


# -- the Role ------------------------------------------------------------------------------


def targets_of(config: Mapping[str, Any]) -> dict[Target, list[str]]:
    """The object names the Role is narrowed to, from a config file's content: the Lease
    (``kubernetes.lease_name``), the StatefulSet and the consumer Deployments."""
    kubernetes = config.get("kubernetes") or {}
    statefulset = kubernetes.get("statefulset")
    return {
        "lease": [str(kubernetes.get("lease_name") or "slotpilot")],
        "statefulset": [str(statefulset)] if statefulset else [],
        "consumers": sorted(str(c["name"]) for c in config.get("consumers") or []),
    }


def role_rules(targets: Mapping[Target, Sequence[str]]) -> list[dict[str, Any]]:
    """:data:`RBAC_RULES` as a Role's ``rules`` list for these targets: a named rule
    carries ``resourceNames``, and is left out when the config names no such object
    (no StatefulSet, no consumer: nothing of that kind is ever called)."""
    rules = []
    for rule in RBAC_RULES:
        entry: dict[str, Any] = {"apiGroups": [rule.api_group], "resources": [rule.resource]}
        if rule.names is not None:
            names = list(targets.get(rule.names) or [])
            if not names:
                continue
            entry["resourceNames"] = names
        entry["verbs"] = list(rule.verbs)
        rules.append(entry)
    return rules
