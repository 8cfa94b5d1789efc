"""helm/slotpilot/values.schema.json: generated from the config model, current, and faithful.

The committed file must be exactly what ``python -m controller.schema`` generates now (a
field added to the model without regenerating fails here). The schema must say what the
model says: the same values accepted and refused, checked side by side with an independent
JSON Schema validator (the ``jsonschema`` package) and :func:`controller.config.load_config`.
Helm's own rendering of the schema is tested in ``test_helm_chart.py``.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # (kubernetes-validate depends on it)
import pytest
import yaml

from balancer.strategies import STRATEGIES
from controller.config import ConfigError, SlotpilotConfig, load_config
from controller.schema import DEFAULT_PATH, main, render_values_schema, values_schema

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "slotpilot"
SCHEMA_FILE = CHART / "values.schema.json"

Doc = dict[str, Any]


def _values() -> Doc:
    values: Doc = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    return values


def _validator() -> jsonschema.Draft202012Validator:
    schema = values_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_generated_one() -> None:
    assert (ROOT / DEFAULT_PATH) == SCHEMA_FILE
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == render_values_schema(), (
        "helm/slotpilot/values.schema.json is stale: run `python -m controller.schema`"
    )
    assert json.loads(committed) == values_schema()


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "values.schema.json"
    assert main([str(path), "--check"]) == 1, "a missing file is stale"
    assert main([str(path)]) == 0
    assert path.read_text(encoding="utf-8") == render_values_schema()
    assert main([str(path), "--check"]) == 0
    path.write_text(render_values_schema().replace('"minimum": 1', '"minimum": 0', 1))
    assert main([str(path), "--check"]) == 1
    assert "stale" in capsys.readouterr().err


def test_module_entry_point_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    done = subprocess.run([sys.executable, "-m", "controller.schema", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert path.read_text(encoding="utf-8") == render_values_schema()


def test_config_schema_is_the_models_own() -> None:
    """Every field of every section appears, with the model's defaults and bounds; the only
    differences are the two documented patches (strategy enum, no cluster.password)."""
    schema = values_schema()
    model = SlotpilotConfig.model_json_schema()
    config = schema["properties"]["config"]
    assert config["properties"] == model["properties"]
    assert config["required"] == ["cluster"] and config["additionalProperties"] is False
    patched = copy.deepcopy(model["$defs"])
    patched["RoutingConfig"]["properties"]["strategy"]["enum"] = sorted(STRATEGIES)
    del patched["ClusterConfig"]["properties"]["password"]
    assert schema["$defs"] == patched
    shards = schema["$defs"]["ShardsConfig"]["properties"]
    assert shards["min_shards"] == model["$defs"]["ShardsConfig"]["properties"]["min_shards"]
    assert shards["min_shards"]["minimum"] == 1 and shards["min_shards"]["type"] == "integer"


def test_strategy_enum_is_the_registry() -> None:
    strategy = values_schema()["$defs"]["RoutingConfig"]["properties"]["strategy"]
    assert strategy["enum"] == sorted(STRATEGIES)
    assert strategy["default"] in STRATEGIES


def test_schema_refs_resolve_from_the_root() -> None:
    """pydantic's ``#/$defs/...`` references stay valid with the config schema nested."""
    text = render_values_schema()
    refs = set(re.findall(r'"#/\$defs/(\w+)"', text))
    assert refs and refs <= set(values_schema()["$defs"])


def test_default_values_pass_the_schema_and_the_model(tmp_path: Path) -> None:
    values = _values()
    errors = sorted(_validator().iter_errors(values), key=str)
    assert not errors, [e.message for e in errors]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values["config"]), encoding="utf-8")
    cfg = load_config(path)
    assert cfg.cluster.password_env == values["config"]["cluster"]["password_env"]


def test_every_chart_key_is_in_values_yaml_and_the_schema() -> None:
    """No undocumented knob, no schema entry without a default in values.yaml."""
    assert set(_values()) == set(values_schema()["properties"])


def _config_with(path: str, value: Any) -> Doc:
    config: Doc = copy.deepcopy(_values()["config"])
    *parents, leaf = path.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return config


GOOD = [
    ("shards.min_shards", 1),
    ("routing.strategy", "round_robin"),
    ("probe.interval_seconds", 5),
    ("consumers", [{"name": "mail", "source": {"type": "redis_stream", "stream": "s",
                                               "group": "g"}}]),
    ("cluster.tls", {"enabled": True, "verify": False}),
]  # fmt: skip
BAD = [
    ("shards.min_shards", -1),
    ("shards.min_shards", 0),
    ("shards.min_shards", "three"),
    ("shards.max_shards", 2.5),
    ("routing.strategy", "fastest"),
    ("probe.interval_seconds", "2s"),
    ("probe.typo_seconds", 1),
    ("shards.platform", "nomad"),
    ("http.port", 70000),
    ("cluster.seeds", []),
    ("cluster.password", "secret"),
    ("shards.autoscale", "maybe"),
    ("consumers", [{"name": "Bad_Name", "source": {"type": "redis_list", "key": "k"}}]),
    ("consumers", [{"name": "x", "source": {"type": "kafka", "topic": "t"}}]),
]


@pytest.mark.parametrize(("path", "value"), GOOD, ids=[p for p, _ in GOOD])
def test_schema_and_model_accept_the_same_good_values(
    path: str, value: Any, tmp_path: Path
) -> None:
    config = _config_with(path, value)
    errors = list(_validator().iter_errors({**_values(), "config": config}))
    assert not errors, [e.message for e in errors]
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(config), encoding="utf-8")
    load_config(file)


@pytest.mark.parametrize(("path", "value"), BAD, ids=[f"{p}={v!r}"[:40] for p, v in BAD])
def test_schema_and_model_refuse_the_same_bad_values(path: str, value: Any, tmp_path: Path) -> None:
    config = _config_with(path, value)
    errors = list(_validator().iter_errors({**_values(), "config": config}))
    assert errors, f"the schema accepts config.{path}={value!r}"
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(file)


@pytest.mark.parametrize(
    ("key", "value"),
    [("replicaCount", 0), ("replicaCount", "two"), ("image", {"repository": ""}),
     ("image", {"repository": "x", "pullPolicy": "Sometimes"}), ("unknownKey", True),
     ("serviceMonitor", {"enabled": "yes"}), ("podDisruptionBudget", {"maxUnavailable": -1}),
     ("podDisruptionBudget", {"minAvailable": "half"}), ("service", {"port": 0}),
     ("networkPolicy", {"redisPorts": []}), ("redis", {"existingSecretKey": ""})],
)  # fmt: skip
def test_schema_refuses_bad_chart_values(key: str, value: Any) -> None:
    values = _values()
    values[key] = value if not isinstance(value, dict) else {**values.get(key, {}), **value}
    assert list(_validator().iter_errors(values)), f"the schema accepts {key}={value!r}"


def undocumented_keys(text: str) -> list[str]:
    """Leaf keys of a values file with no ``# --`` comment right above them or above one of
    their parents (the helm-docs convention: a documented parent covers its block)."""
    missing: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):(.*)$", line)
        if match and not stripped.startswith("-"):
            indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
            while stack and stack[-1][0] >= indent:
                stack.pop()
            documented = previous.startswith("# --") or any(d for _, _, d in stack)
            path = ".".join([k for _, k, _ in stack] + [key])
            if rest and not rest.startswith("#") and not documented:
                missing.append(path)
            stack.append((indent, key, documented))
        if stripped:
            previous = stripped
    return missing


def test_values_yaml_is_documented_line_by_line() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert undocumented_keys(text) == []
    assert undocumented_keys("a:\n  # -- doc\n  b: 1\n  c: 2\n# -- d\nd:\n  e: 1\n") == ["a.c"]
