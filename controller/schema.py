"""The Helm chart's ``values.schema.json``, generated from the controller's config model.

One source of truth: the chart's ``config`` value *is* the controller's config file, so its
schema is :class:`~controller.config.SlotpilotConfig`'s JSON schema (pydantic), and Helm
refuses a bad value at ``helm install``/``lint`` time instead of the pod crash-looping on
it. The chart's own keys (image, replicas, toggles, ...) are described here by hand. Two
facts the model enforces in validators, not in its schema, are patched in: the routing
strategy is an ``enum`` of :data:`balancer.strategies.STRATEGIES`, and ``cluster.password``
is not a key at all (the password never sits in a file; the chart takes it from a Secret).
Cross-field rules (``min_shards <= max_shards``, timeout below interval, ...) are not
expressible here; ``slotpilot validate`` still checks them.

``python -m controller.schema [PATH]`` writes the file; ``--check`` exits 1 when the file
on disk differs from what the model generates.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

from balancer.strategies import STRATEGIES
from controller.config import SlotpilotConfig

__all__ = ["DEFAULT_PATH", "main", "render_values_schema", "values_schema"]

DEFAULT_PATH = Path("helm/slotpilot/values.schema.json")

Schema = dict[str, Any]

_STRING: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_OBJECT: Schema = {"type": "object"}
_STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
_QUANTITY_MAP: Schema = {"type": "object", "additionalProperties": {"type": ["string", "number"]}}
_ARRAY_OF_OBJECTS: Schema = {"type": "array", "items": {"type": "object"}}
_DISRUPTION: Schema = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": "^[0-9]+%$"},
        {"type": "null"},
    ]
}
_PORT: Schema = {"type": "integer", "minimum": 1, "maximum": 65535}


def _strict(properties: Schema, description: str, **extra: Any) -> Schema:
    """An object with exactly these keys (a typo in values is an error, as in the config)."""
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": properties,
        **extra,
    }


def _config_schema() -> tuple[Schema, Schema]:
    """SlotpilotConfig's schema and its ``$defs`` (hoisted to the root by the caller, so the
    model's ``#/$defs/...`` references resolve unchanged), with the two patches applied."""
    schema = copy.deepcopy(SlotpilotConfig.model_json_schema())
    defs: Schema = schema.pop("$defs")
    strategy = defs["RoutingConfig"]["properties"]["strategy"]
    strategy["enum"] = sorted(STRATEGIES)
    cluster = defs["ClusterConfig"]["properties"]
    del cluster["password"]  # refused in a file by load_config: use redis.* in the chart
    schema["description"] = (
        "the controller's config file (mounted at /etc/slotpilot/config.yaml); "
        "keys as in the README's configuration reference"
    )
    return schema, defs


def _chart_properties() -> Schema:
    """The chart's own values, written by hand (they are not in the controller's model)."""
    resources = _strict(
        {"requests": _QUANTITY_MAP, "limits": _QUANTITY_MAP, "claims": _ARRAY_OF_OBJECTS},
        "container resources (requests/limits)",
    )
    probe_timing = _strict(
        {
            "periodSeconds": {"type": "integer", "minimum": 1},
            "timeoutSeconds": {"type": "integer", "minimum": 1},
            "failureThreshold": {"type": "integer", "minimum": 1},
            "initialDelaySeconds": {"type": "integer", "minimum": 0},
        },
        "probe timing; the path (/healthz or /readyz) and port are fixed",
    )
    return {
        "nameOverride": _STRING | {"description": "replaces the chart name in resource names"},
        "fullnameOverride": _STRING | {"description": "replaces the whole resource name"},
        "replicaCount": {"type": "integer", "minimum": 1, "description": "operator pods"},
        "revisionHistoryLimit": {"type": "integer", "minimum": 0},
        "image": _strict(
            {
                "repository": _STRING | {"minLength": 1},
                "tag": _STRING | {"description": "defaults to the chart's appVersion"},
                "digest": _STRING | {"pattern": "^(sha256:[0-9a-f]{64})?$"},
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            },
            "the controller image",
            required=["repository"],
        ),
        "imagePullSecrets": {"type": "array", "items": _strict({"name": _STRING}, "a Secret")},
        "serviceAccount": _strict(
            {
                "create": _BOOL,
                "name": _STRING,
                "annotations": _STRING_MAP,
                "automountServiceAccountToken": _BOOL,
            },
            "the operator's identity",
        ),
        "rbac": _strict({"create": _BOOL}, "create the Role and RoleBinding (least privilege)"),
        "podAnnotations": _STRING_MAP,
        "podLabels": _STRING_MAP,
        "podSecurityContext": _OBJECT,
        "securityContext": _OBJECT,
        "resources": resources,
        "livenessProbe": probe_timing,
        "readinessProbe": probe_timing,
        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        "nodeSelector": _STRING_MAP,
        "tolerations": _ARRAY_OF_OBJECTS,
        "affinity": _OBJECT,
        "topologySpreadConstraints": _ARRAY_OF_OBJECTS,
        "priorityClassName": _STRING,
        "extraEnv": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "redis": _strict(
            {
                "existingSecret": _STRING,
                "existingSecretKey": _STRING | {"minLength": 1},
                "password": _STRING,
            },
            "where the Redis password comes from: an existing Secret, or one the chart "
            "creates from redis.password; put in the env variable config.cluster.password_env",
        ),
        "service": _strict(
            {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "port": _PORT,
                "annotations": _STRING_MAP,
            },
            "the Service in front of /metrics and /v1/*",
        ),
        "admissionPolicy": _strict(
            {"enabled": _BOOL},
            "only this release's ServiceAccount may change the shard StatefulSet's replicas",
        ),
        "serviceMonitor": _strict(
            {
                "enabled": _BOOL,
                "interval": _STRING,
                "scrapeTimeout": _STRING,
                "labels": _STRING_MAP,
                "namespace": _STRING,
            },
            "a Prometheus Operator ServiceMonitor (needs its CRD)",
        ),
        "prometheusRule": _strict(
            {"enabled": _BOOL, "labels": _STRING_MAP, "namespace": _STRING},
            "a Prometheus Operator PrometheusRule from files/alerts.yaml (needs its CRD)",
        ),
        "grafanaDashboard": _strict(
            {
                "enabled": _BOOL,
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
                "namespace": _STRING,
            },
            'a ConfigMap labelled grafana_dashboard: "1" holding files/dashboard.json',
        ),
        "podDisruptionBudget": _strict(
            {
                "minAvailable": _DISRUPTION,
                "maxUnavailable": _DISRUPTION,
            },
            "rendered when one of the two is set (not both; null unsets the default)",
        ),
        "networkPolicy": _strict(
            {
                "enabled": _BOOL,
                "ingressFrom": _ARRAY_OF_OBJECTS,
                "redisTo": _ARRAY_OF_OBJECTS,
                "redisPorts": {"type": "array", "items": _PORT, "minItems": 1},
                "apiServerTo": _ARRAY_OF_OBJECTS,
                "apiServerPorts": {"type": "array", "items": _PORT, "minItems": 1},
            },
            "a NetworkPolicy: ingress to port http, egress to DNS, Redis and the API server",
        ),
    }


def values_schema() -> Schema:
    """The whole ``values.schema.json`` as a dict (pure: same model, same result)."""
    config, defs = _config_schema()
    properties = _chart_properties()
    properties["config"] = config
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "slotpilot Helm chart values",
        "description": "Generated by `python -m controller.schema` from the controller's "
        "config model (controller/config.py); do not edit by hand.",
        "type": "object",
        "additionalProperties": False,
        "required": ["image", "config"],
        "properties": properties,
        "$defs": defs,
    }


def render_values_schema() -> str:
    """The schema as the committed file's text (stable key order, trailing newline)."""
    return json.dumps(values_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema to PATH (default helm/slotpilot/values.schema.json), or with
    ``--check`` report whether the file is up to date (exit 1 when it is not)."""
    parser = argparse.ArgumentParser(prog="python -m controller.schema", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = render_values_schema()
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else ""
        if current != text:
            print(f"{args.path} is stale: run python -m controller.schema", file=sys.stderr)
            return 1
        print(f"{args.path} is up to date")
        return 0
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
