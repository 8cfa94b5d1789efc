"""Controller configuration: one pydantic model, loaded from YAML, overridable from env.

Every section forbids unknown keys, so a typo is an error naming its dotted path rather
than a silently ignored setting. ``SLOTPILOT_<SECTION>__<FIELD>`` environment variables
beat the file. The Redis password is never in the file: it comes from an environment
variable or a file named there, is read when needed, and is a ``SecretStr`` so it never
appears in logs or reprs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from balancer.endpoint import parse_address
from balancer.strategies import STRATEGIES
from controller.backlog import BacklogSource
from controller.policy import ConsumerPolicy, ShardPolicy

log = logging.getLogger("slotpilot.config")

__all__ = [
    "ConfigError",
    "SlotpilotConfig",
    "TLSConfig",
    "check_runnable",
    "load_config",
    "resolve_password",
    "validate_command",
]


class ConfigError(ValueError):
    """Invalid configuration: ``problems`` is a list of (dotted path, message)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Section):
    enabled: bool = Field(False, description="connect to nodes over TLS")
    ca_file: str | None = Field(None, description="CA bundle to verify nodes")
    cert_file: str | None = Field(None, description="client certificate (mutual TLS)")
    key_file: str | None = Field(None, description="client key (mutual TLS)")
    verify: bool = Field(True, description="verify the nodes' certificates")
    check_hostname: bool = Field(
        True, description="match the node's address against its certificate (false: warned)"
    )

    def redis_options(self) -> dict[str, Any]:
        """redis-py connection options for these settings, hostname checking explicit (a
        disabled check is logged as a warning every time the options are built)."""
        if not self.enabled:
            return {}
        check = self.verify and self.check_hostname
        if self.verify and not self.check_hostname:
            log.warning("cluster.tls.check_hostname is false: node certificates are verified "
                        "but not matched to the node's address")  # fmt: skip
        return {"ssl": True, "ssl_ca_certs": self.ca_file, "ssl_certfile": self.cert_file,
                "ssl_keyfile": self.key_file, "ssl_check_hostname": check,
                "ssl_cert_reqs": "required" if self.verify else "none"}  # fmt: skip


class ClusterConfig(_Section):
    seeds: list[str] = Field(min_length=1, description="HOST:PORT of one or more cluster nodes")
    username: str | None = Field(None, description="ACL user")
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: str | None = Field(None, description="file holding the password")
    password: SecretStr | None = Field(None, description="set from env only; never in files")
    tls: TLSConfig = Field(default_factory=TLSConfig)  # type: ignore[arg-type]

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[str]) -> list[str]:
        for seed in seeds:
            parse_address(seed)
        return seeds

    @model_validator(mode="after")
    def _one_password_source(self) -> ClusterConfig:
        if self.password_env and self.password_file:
            raise ValueError("password_env and password_file are mutually exclusive")
        return self


class ProbeConfig(_Section):
    interval_seconds: float = Field(2.0, gt=0, description="time between probe cycles")
    timeout_seconds: float = Field(0.5, gt=0, description="per-node socket timeout")
    rise: int = Field(2, ge=1, description="good probes in a row before a node is up")
    fall: int = Field(3, ge=1, description="bad probes in a row before a node is down")
    stall_cycles: int = Field(
        15, ge=2, description="no reconcile cycle (or reshard step) completed in this many "
        "intervals: /healthz fails and leadership is handed back"
    )  # fmt: skip

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> ProbeConfig:
        if self.timeout_seconds >= self.interval_seconds:
            raise ValueError("timeout_seconds must be < interval_seconds")
        return self


class BreakerConfig(_Section):
    fail_max: int = Field(5, ge=1, description="failures that open a node's breaker")
    reset_timeout_seconds: float = Field(30.0, gt=0, description="open time before trials")
    success_threshold: int = Field(1, ge=1, description="trial successes that close it")
    max_ejection_percent: float = Field(50.0, ge=0, le=100, description="ejection cap")


class RoutingConfig(_Section):
    strategy: str = Field(
        "least_connections", description=f"one of {', '.join(sorted(STRATEGIES))}"
    )
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)  # type: ignore[arg-type]
    max_replica_lag_seconds: float = Field(
        30, gt=0, description="a replica silent from its primary longer than this "
        "(master_last_io_seconds_ago; keep above repl-ping-replica-period) gets weight 0",
    )  # fmt: skip

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, name: str) -> str:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(sorted(STRATEGIES))}")
        return name


class CapacityConfig(_Section):
    memory_bytes: int | None = Field(None, gt=0, description="100 % memory; null: maxmemory")
    ops_per_second: float | None = Field(50_000, gt=0, description="100 % ops/s per node")
    cpu_cores: float | None = Field(1.0, gt=0, description="100 % CPU per node")


class ShardsConfig(_Section):
    platform: Literal["local", "kubernetes"] = Field("local", description="where shards run")
    min_shards: int = Field(2, ge=1, description="never fewer shards")
    max_shards: int = Field(10, ge=1, description="never more shards")
    replicas_per_shard: int = Field(1, ge=0, description="replicas of each primary")
    scale_up_threshold: float = Field(
        0.8, gt=0, le=1, description="cluster utilization to add a shard"
    )
    scale_down_threshold: float = Field(0.3, gt=0, le=1, description="utilization to remove one")
    scale_up_cooldown_seconds: float = Field(300, ge=0, description="between scale-ups")
    scale_down_cooldown_seconds: float = Field(
        600, ge=0, description="after any scaling, before a scale-down"
    )
    node_timeout_ms: int = Field(15_000, gt=0, description="the cluster's cluster-node-timeout")
    autoscale: bool = Field(
        False, description="act on shard decisions (reshard live); false: only report them"
    )
    engine: Literal["auto", "atomic", "classic"] = Field(
        "auto", description="slot migration: atomic (Valkey 9), classic (Redis 7), auto"
    )
    state_dir: str | None = Field(
        None, description="local platform: where new shard processes live (default ~/.local/state)"
    )
    scale_up_stabilization_seconds: float = Field(
        60, ge=0, description="median utilization over this window must exceed the threshold"
    )
    scale_up_stabilization_probes: int = Field(
        3, ge=1, description="... and over at least this many probes"
    )
    settle_seconds: float = Field(
        30, ge=0, description="after our own reshard, utilization samples are not evidence"
    )
    max_step: int = Field(1, ge=1, description="shards added or removed per change")
    retry_base_seconds: float = Field(
        10, gt=0, description="wait after a failed shard change, doubled per failure"
    )
    retry_max_seconds: float = Field(600, gt=0, description="longest wait between retries")
    forget_failed_after_seconds: float = Field(
        60, ge=0, description="a failed node owning no slots is forgotten after this long"
    )
    lease_ttl_seconds: float = Field(
        15, gt=0, description="one actor per cluster: lease lifetime without renewal"
    )
    intent_file: str | None = Field(
        None, description="where interrupted changes and cooldowns are kept "
        "(default <state_dir>/intent-<first seed>.json)",
    )  # fmt: skip
    scale_in_max_memory_share: float = Field(
        0.8, gt=0, le=1, description="refuse a scale-in leaving a survivor above this share "
        "of capacity.memory_bytes (else maxmemory) once the leavers' data has moved",
    )  # fmt: skip
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _bounds(self) -> ShardsConfig:
        if self.min_shards > self.max_shards:
            raise ValueError(
                f"min_shards ({self.min_shards}) must be <= max_shards ({self.max_shards})"
            )
        if self.scale_down_threshold >= self.scale_up_threshold:
            raise ValueError("scale_down_threshold must be < scale_up_threshold")
        if self.retry_base_seconds > self.retry_max_seconds:
            raise ValueError("retry_base_seconds must be <= retry_max_seconds")
        return self

    def policy(self) -> ShardPolicy:
        return ShardPolicy(self.min_shards, self.max_shards, self.scale_up_threshold,
                           self.scale_down_threshold, self.scale_up_cooldown_seconds,
                           self.scale_down_cooldown_seconds, self.max_step,
                           self.scale_up_stabilization_seconds,
                           self.scale_up_stabilization_probes, self.settle_seconds,
                           self.retry_base_seconds, self.retry_max_seconds)  # fmt: skip


class ListSource(_Section):
    type: Literal["redis_list", "sorted_set"]
    key: str = Field(min_length=1)


class StreamSource(_Section):
    type: Literal["redis_stream"]
    stream: str = Field(min_length=1)
    group: str | None = None
    mode: Literal["lag", "pending", "length"] = "lag"

    @model_validator(mode="after")
    def _group(self) -> StreamSource:
        if self.mode != "length" and not self.group:
            raise ValueError(f"mode {self.mode} needs a consumer group")
        return self


class PresetSource(_Section):
    type: Literal["bullmq", "rq", "celery"]
    queue: str = Field(min_length=1)
    prefix: str = "bull"


Source = Annotated[ListSource | StreamSource | PresetSource, Field(discriminator="type")]


class RatePolicyConfig(_Section):
    pods: int | None = Field(4, ge=1, description="at most this many replicas added per period")
    percent: float | None = Field(100, gt=0, description="or this % of the period's start count")
    period_seconds: float = Field(15, gt=0, description="the period; the larger limit wins")


class ScaleDownPolicyConfig(RatePolicyConfig):
    pods: int | None = Field(
        None, ge=1, description="at most this many replicas removed per period"
    )


class BehaviorConfig(_Section):
    tolerance: float = Field(
        0.1, ge=0, lt=1, description="no change while within this ratio of target"
    )
    scale_down_stabilization_seconds: float = Field(
        300, ge=0, description="scale down only to the highest recommendation of this window"
    )
    scale_up_stabilization_seconds: float = Field(
        0, ge=0, description="scale up only to the lowest recommendation of this window"
    )
    scale_up: RatePolicyConfig = Field(default_factory=RatePolicyConfig)  # type: ignore[arg-type]
    scale_down: ScaleDownPolicyConfig = Field(default_factory=ScaleDownPolicyConfig)  # type: ignore[arg-type]


class ConsumerConfig(_Section):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", description="DNS label")
    source: Source
    target_backlog_per_replica: float = Field(100, gt=0, description="backlog one replica handles")
    activation_backlog: float = Field(0, ge=0, description="0 ↔ 1 replica above/at this backlog")
    min_replicas: int = Field(0, ge=0, description="never fewer (0 allows scale to zero)")
    max_replicas: int = Field(20, ge=1, description="never more")
    fallback_replicas: int | None = Field(
        None, ge=0, description="held after repeated source failures"
    )
    fallback_after_failures: int = Field(3, ge=1, description="failed reads before the fallback")
    command: list[str] | None = Field(None, description="local platform: what each replica runs")
    env: list[str] = Field(
        default_factory=list, description="local platform: the only environment a replica gets "
        "besides PATH/HOME/LANG/TZ/TMPDIR/USER: NAME (copied from the controller) or NAME=value",
    )  # fmt: skip
    behavior: BehaviorConfig = Field(default_factory=BehaviorConfig)  # type: ignore[arg-type]

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for item in value:
            name = item.partition("=")[0]
            if not name.isidentifier() or not name.isascii():
                raise ValueError(f"env: {item!r} is not NAME or NAME=value")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> ConsumerConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        return self

    def backlog_source(self) -> BacklogSource:
        s = self.source
        if isinstance(s, StreamSource):
            return BacklogSource("redis_stream", s.stream, group=s.group, mode=s.mode)
        if isinstance(s, PresetSource):
            return BacklogSource(s.type, s.queue, prefix=s.prefix)
        return BacklogSource(s.type, s.key)

    def policy(self) -> ConsumerPolicy:
        b = self.behavior
        return ConsumerPolicy(
            name=self.name, target_backlog_per_replica=self.target_backlog_per_replica,
            activation_backlog=self.activation_backlog, min_replicas=self.min_replicas,
            max_replicas=self.max_replicas, fallback_replicas=self.fallback_replicas,
            fallback_after_failures=self.fallback_after_failures, tolerance=b.tolerance,
            scale_up_stabilization_seconds=b.scale_up_stabilization_seconds,
            scale_down_stabilization_seconds=b.scale_down_stabilization_seconds,
            scale_up_pods=b.scale_up.pods, scale_up_percent=b.scale_up.percent,
            scale_up_period_seconds=b.scale_up.period_seconds, scale_down_pods=b.scale_down.pods,
            scale_down_percent=b.scale_down.percent,
            scale_down_period_seconds=b.scale_down.period_seconds,
        )  # fmt: skip


class HTTPConfig(_Section):
    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 picks a free one")


class KubernetesConfig(_Section):
    """Where the shard StatefulSet, the consumer Deployments and the Lease live."""

    namespace: str | None = Field(
        None, description="namespace of the workloads and the Lease; null: the pod's own "
        "(POD_NAMESPACE, or the service account's namespace file)"
    )  # fmt: skip
    statefulset: str | None = Field(
        None, description="the StatefulSet running the cluster (shards.platform: kubernetes)"
    )
    redis_port_name: str = Field(
        "redis", min_length=1, max_length=15,
        description="the name of the container port clients use in the StatefulSet's pods "
        "(other charts: e.g. tcp-redis)",
    )  # fmt: skip
    kubeconfig: str | None = Field(
        None, description="kubeconfig file; null: in-cluster config, else KUBECONFIG/~/.kube"
    )
    lease_name: str = Field("slotpilot", min_length=1, description="coordination/v1 Lease")
    lease_seconds: float = Field(15, gt=0, description="how long a Lease lasts unrenewed")
    renew_deadline_seconds: float = Field(10, gt=0, description="leader stops acting after")
    retry_seconds: float = Field(2, gt=0, description="acquire/renew attempts every")
    api_timeout_seconds: float = Field(10, gt=0, description="per Kubernetes API request")

    @model_validator(mode="after")
    def _ordered_timing(self) -> KubernetesConfig:
        if not self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError("need retry_seconds < renew_deadline_seconds < lease_seconds")
        return self


class SlotpilotConfig(BaseSettings):
    """The whole file. Environment: ``SLOTPILOT_PROBE__INTERVAL_SECONDS=5`` etc."""

    model_config = SettingsConfigDict(
        env_prefix="SLOTPILOT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    cluster: ClusterConfig
    probe: ProbeConfig = Field(default_factory=ProbeConfig)  # type: ignore[arg-type]
    routing: RoutingConfig = Field(default_factory=RoutingConfig)  # type: ignore[arg-type]
    shards: ShardsConfig = Field(default_factory=ShardsConfig)  # type: ignore[arg-type]
    consumers: list[ConsumerConfig] = Field(default_factory=list)
    http: HTTPConfig = Field(default_factory=HTTPConfig)  # type: ignore[arg-type]
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:  # fmt: skip
        return env_settings, init_settings  # the environment beats the file

    @model_validator(mode="after")
    def _unique_consumers(self) -> SlotpilotConfig:
        names = [c.name for c in self.consumers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"consumer names must be unique: {', '.join(dupes)}")
        return self


def _read_yaml(path: str | Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError([("<file>", f"cannot read {path}: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        where = f"byte {exc.object[exc.start]:#04x} at offset {exc.start}"
        raise ConfigError([("<file>", f"{path} is not UTF-8 text ({where})")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([("<file>", f"invalid YAML: {exc}")]) from None


def load_config(path: str | Path) -> SlotpilotConfig:
    """Read, merge env overrides, validate; raise :class:`ConfigError` with dotted paths."""
    return config_from_data(_read_yaml(path))


def unwrap_config(data: Any) -> tuple[Any, str]:
    """The config inside what was given, and what held it: a Kubernetes ConfigMap (its
    ``config.yaml`` key, or its only key), the Helm chart's values (their ``config``), or
    the config file itself."""
    if isinstance(data, dict) and data.get("kind") == "ConfigMap":
        name = (data.get("metadata") or {}).get("name", "?")
        entries = data.get("data") or {}
        key = "config.yaml" if "config.yaml" in entries else None
        if key is None and len(entries) == 1:
            key = next(iter(entries))
        if key is None:
            keys = ", ".join(sorted(entries)) or "none"
            raise ConfigError([("data", f"ConfigMap {name} has no config.yaml key ({keys})")])
        try:
            inner = yaml.safe_load(str(entries[key])) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([(f"data.{key}", f"invalid YAML: {exc}")]) from None
        return inner, f"ConfigMap {name}, key {key}"
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "image" in data:
        return data["config"], "Helm values, .config"
    return data, ""


def config_from_data(data: Any) -> SlotpilotConfig:
    """Validate a parsed config (env overrides merged); :class:`ConfigError` with paths."""
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError([("<file>", "the top level must be a mapping of section names")])
    cluster = data.get("cluster")
    if isinstance(cluster, dict) and "password" in cluster:  # env or file only (README)
        hint = "use password_env, password_file or the SLOTPILOT_CLUSTER__PASSWORD variable"
        raise ConfigError([("cluster.password", f"not allowed in a file: {hint}")])
    try:
        return SlotpilotConfig(**data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
            loc = (
                loc.replace(".ListSource", "")
                .replace(".StreamSource", "")
                .replace(".PresetSource", "")
            )
            message = error["msg"].removeprefix("Value error, ")
            variable = _env_variable(loc)
            if variable is not None:
                message += f" (from the environment: {variable})"
            problems.append((loc or "<root>", message))
        raise ConfigError(problems) from None


def _env_variable(loc: str) -> str | None:
    """The ``SLOTPILOT_…`` variable that set the field at ``loc`` (or a section above
    it), if one is set: an error there is the environment's, not the file's."""
    parts = [p for p in loc.split(".") if p and not p.isdigit()]
    upper = {k.upper(): k for k in os.environ}
    while parts:
        name = "SLOTPILOT_" + "__".join(parts).upper()
        if name in upper:
            return upper[name]
        parts.pop()
    return None


def resolve_password(cfg: SlotpilotConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The Redis password, read now from the configured env var or file."""
    environ = os.environ if env is None else env
    c = cfg.cluster
    if c.password is not None:
        return c.password.get_secret_value()
    if c.password_env:
        if c.password_env not in environ:
            raise ConfigError(
                [("cluster.password_env", f"environment variable {c.password_env} is not set")]
            )
        return environ[c.password_env]
    if c.password_file:
        try:
            return Path(c.password_file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise ConfigError(
                [("cluster.password_file", f"cannot read {c.password_file}: {exc.strerror}")]
            ) from None
        except UnicodeDecodeError:
            raise ConfigError([("cluster.password_file", "is not UTF-8 text")]) from None
    return None


def check_runnable(
    cfg: SlotpilotConfig, env: Mapping[str, str] | None = None, offline: bool = False
) -> list[tuple[str, str]]:
    """What ``run`` would refuse beyond the schema (so ``validate`` refuses it too): a
    Kubernetes autoscale without its StatefulSet, a password that cannot be read, TLS
    files that are missing, and local autoscale with TLS (new local nodes would need
    server certificates). ``offline`` (validating a file away from where it runs): a
    password variable or file that is not there is returned as a warning instead."""
    problems: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    kubernetes = cfg.shards.platform == "kubernetes"
    if kubernetes and cfg.shards.autoscale and not cfg.kubernetes.statefulset:
        problems.append(("kubernetes.statefulset", "required for shards.autoscale on Kubernetes"))
    try:
        resolve_password(cfg, env)
    except ConfigError as exc:
        (warnings if offline else problems).extend(
            (where, f"{message} (set where slotpilot runs)" if offline else message)
            for where, message in exc.problems
        )
    tls = cfg.cluster.tls
    for name in ("ca_file", "cert_file", "key_file"):
        file = getattr(tls, name)
        if tls.enabled and file is not None and not os.access(file, os.R_OK):
            problems.append((f"cluster.tls.{name}", f"cannot read {file}"))
    if tls.enabled and cfg.shards.autoscale and cfg.shards.platform == "local":
        problems.append(("shards.autoscale", "the local platform cannot start TLS nodes yet"))
    if problems:
        raise ConfigError(problems)
    return warnings


def validate_command(path: str, out: TextIO) -> int:
    """``slotpilot validate FILE``: 0 and "ok", or 2 and one line per problem (the schema's,
    then what ``run`` would refuse: :func:`check_runnable`). FILE may be the config file, a
    ConfigMap holding it, or the Helm chart's values; a password variable or file that is
    not set here is a warning (it is set where slotpilot runs)."""
    try:
        data, source = unwrap_config(_read_yaml(path))
        cfg = config_from_data(data)
        warnings = check_runnable(cfg, offline=True)
    except ConfigError as exc:
        for where, message in exc.problems:
            out.write(f"{where}: {message}\n")
        return 2
    for where, message in warnings:
        out.write(f"warning: {where}: {message}\n")
    tls = cfg.cluster.tls
    if tls.enabled and tls.verify and not tls.check_hostname:
        out.write("warning: cluster.tls.check_hostname is false: certificates are not matched "
                  "to node addresses\n")  # fmt: skip
    out.write(f"ok: {path}{f' ({source})' if source else ''}\n")
    return 0


_SOURCE_KINDS = (
    "`redis_list`/`sorted_set` {key}, "
    "`redis_stream` {stream, group, mode: lag\\|pending\\|length}, "
    "`bullmq`/`rq`/`celery` {queue, prefix}"
)


def render_reference() -> str:
    """The configuration reference as a Markdown table, generated from the model."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            annotation = info.annotation
            nested = (
                annotation
                if isinstance(annotation, type) and issubclass(annotation, BaseModel)
                else None
            )
            if nested is not None:
                walk(nested, f"{path}.")
                continue
            if name == "source":
                rows.append(
                    f"| `{path}` | {_SOURCE_KINDS} | required | where the backlog is read |"
                )
                continue
            if info.is_required():
                default = "required"
            elif info.default_factory is not None:
                default = "[]"
            else:
                default = f"`{info.default!r}`" if info.default is not None else "null"
            kind = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            if kind == "Literal":
                kind = " | ".join(f"`{v}`" for v in getattr(annotation, "__args__", ()))
            kind = kind.replace("pydantic.types.", "")
            kind = kind.replace("|", "\\|")
            meaning = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{path}` | {kind} | {default} | {meaning} |")

    walk(SlotpilotConfig, "")
    walk(ConsumerConfig, "consumers[].")
    return "\n".join(row for row in rows if not row.startswith("| `consumers` "))
