"""What the emulated Kubernetes API means by its rules, as pure functions and values.

Which resources exist (:data:`KINDS`), how errors look (:class:`ApiError` renders a
``Status``), how label and field selectors match, and how the three patch types apply.
:mod:`tests.k8s.emulator` serves these over HTTP; they are kept apart so they are tested
without a server.
"""

from __future__ import annotations

import copy
import datetime
import re
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import jsonpatch
import kmock

__all__ = [
    "KINDS",
    "ApiError",
    "Kind",
    "Obj",
    "apply_patch",
    "match_fields",
    "match_labels",
    "merge_patch",
    "now",
    "parse_label_selector",
    "rbac_allows",
    "request_verb",
    "selected",
    "shift_times",
    "strategic_merge_patch",
]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """One API resource the emulator serves: where it lives and what it supports."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> kmock.resource:
        return kmock.resource(group=self.group, version=self.version, plural=self.plural)


KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "pods", "Pod", subresources=("status",)),
    Kind("", "v1", "events", "Event"),
    Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", subresources=("status",)),
    Kind("", "v1", "services", "Service", subresources=("status",)),
    Kind("", "v1", "configmaps", "ConfigMap"),
    Kind("apps", "v1", "statefulsets", "StatefulSet", subresources=("scale", "status")),
    Kind("apps", "v1", "deployments", "Deployment", subresources=("scale", "status")),
    Kind("coordination.k8s.io", "v1", "leases", "Lease"),
    Kind("events.k8s.io", "v1", "events", "Event"),
    Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
         subresources=("status",)),
    Kind("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", subresources=("status",)),
)  # fmt: skip

_REASONS = {
    400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
    500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}  # fmt: skip


class ApiError(Exception):
    """An API answer other than success, rendered as a Kubernetes ``Status``."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.message = message

    def response(self, headers: dict[str, str] | None = None) -> aiohttp.web.Response:
        body = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }  # fmt: skip
        return aiohttp.web.json_response(body, status=self.code, headers=headers)


_SET_EXPR = re.compile(r"^\s*(\S+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_top_level(selector: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x,y),b=c`` has two requirements)."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def parse_label_selector(selector: str) -> list[tuple[str, str, frozenset[str]]]:
    """Requirements ``(key, op, values)`` with op one of ``in notin exists !exists``."""
    requirements: list[tuple[str, str, frozenset[str]]] = []
    for part in _split_top_level(selector):
        if match := _SET_EXPR.match(part):
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append((match.group(1), match.group(2), values))
        elif "!=" in part:
            key, value = part.split("!=", 1)
            requirements.append((key.strip(), "notin", frozenset({value.strip()})))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            requirements.append((key.strip(), "in", frozenset({value.strip()})))
        elif part.startswith("!"):
            requirements.append((part[1:].strip(), "!exists", frozenset()))
        else:
            requirements.append((part, "exists", frozenset()))
    return requirements


def match_labels(labels: dict[str, str], selector: str) -> bool:
    """Whether ``labels`` satisfy every requirement of a label-selector string."""
    for key, op, values in parse_label_selector(selector):
        present = key in labels
        ok = {
            "in": present and labels.get(key) in values,
            "notin": not present or labels.get(key) not in values,
            "exists": present,
            "!exists": not present,
        }[op]
        if not ok:
            return False
    return True


def match_fields(obj: Obj, selector: str) -> bool:
    for part in _split_top_level(selector):
        negate = "!=" in part
        path, expected = part.replace("!=", "=").replace("==", "=").split("=", 1)
        value: Any = obj
        for step in path.strip().split("."):
            value = value.get(step) if isinstance(value, dict) else None
        if (str(value if value is not None else "") == expected.strip()) == negate:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, lists replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(*lists: list[Any]) -> str | None:
    for key in ("name", "type"):
        if all(isinstance(item, dict) and key in item for items in lists for item in items):
            return key
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch, except lists of objects merge item by item on ``name`` or ``type``."""
    if isinstance(patch, list) and isinstance(target, list):
        key = _merge_key(target, patch) if target and patch else None
        if key is None:
            return copy.deepcopy(patch)
        merged = [copy.deepcopy(item) for item in target]
        for item in patch:
            index = next((i for i, old in enumerate(merged) if old[key] == item[key]), None)
            if index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = strategic_merge_patch(merged[index], item)
        return merged
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def apply_patch(target: Obj, body: Any, content_type: str) -> Obj:
    if content_type.startswith("application/json-patch+json"):
        if not isinstance(body, list):
            raise ApiError(400, "a JSON patch is a list of operations")
        try:
            result: Obj = jsonpatch.apply_patch(target, body)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise ApiError(422, f"the JSON patch test failed: {exc}") from exc
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, f"the JSON patch cannot be applied: {exc}") from exc
        return result
    if not isinstance(body, dict):
        raise ApiError(400, "a merge patch is a JSON object")
    if content_type.startswith("application/merge-patch+json"):
        return dict(merge_patch(target, body))
    if content_type.startswith("application/strategic-merge-patch+json"):
        return dict(strategic_merge_patch(target, body))
    raise ApiError(415, f"unsupported patch type: {content_type!r}")


def selected(obj: Obj, labels: str, fields: str) -> bool:
    obj_labels = (obj.get("metadata") or {}).get("labels") or {}
    return (not labels or match_labels(obj_labels, labels)) and (
        not fields or match_fields(obj, fields)
    )


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Wall-clock fields a client fills in from its own clock, by resource.
_CLIENT_TIMES: dict[str, tuple[tuple[str, ...], ...]] = {
    "leases": (("spec", "renewTime"), ("spec", "acquireTime")),
    "events": (("firstTimestamp",), ("lastTimestamp",), ("eventTime",)),
}


def shift_times(plural: str, body: Any, seconds: float) -> Any:
    """``body`` as a client whose clock is ``seconds`` ahead would have written it: the
    wall-clock fields it fills in (:data:`_CLIENT_TIMES`) shifted, the rest untouched."""
    if not isinstance(body, dict) or not seconds:
        return body
    shifted = copy.deepcopy(body)
    for path in _CLIENT_TIMES.get(plural, ()):
        holder = shifted
        for step in path[:-1]:
            holder = holder.get(step) if isinstance(holder, dict) else None
        value = holder.get(path[-1]) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(value, str) and value:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            holder[path[-1]] = (moment + datetime.timedelta(seconds=seconds)).isoformat()
    return shifted


def request_verb(method: str, name: str | None, params: Any) -> str:
    """The RBAC verb of a request: GET on an object ``get``, on a collection ``list`` (or
    ``watch`` with ``?watch=true``), POST ``create``, PUT ``update``, PATCH ``patch``,
    DELETE ``delete`` (``deletecollection`` on a collection)."""
    if method == "GET":
        if str(params.get("watch", "")).lower() in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def rbac_allows(rules: list[Obj], group: str, resource: str, verb: str, name: str | None) -> bool:
    """Whether a Role's ``rules`` allow ``verb`` on ``resource`` (``plural`` or
    ``plural/subresource``) of ``group``, as the API server's RBAC authorizer decides:
    a rule matches on group, resource and verb (``*`` matches any), and when it lists
    ``resourceNames`` only a request for one of those names (never a create or a list)."""
    for rule in rules:
        if not {group, "*"} & set(rule.get("apiGroups") or []):
            continue
        if not {resource, "*"} & set(rule.get("resources") or []):
            continue
        if not {verb, "*"} & set(rule.get("verbs") or []):
            continue
        names = rule.get("resourceNames") or []
        if names and (not name or name not in names):
            continue
        return True
    return False
