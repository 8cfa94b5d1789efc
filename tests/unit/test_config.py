"""Configuration: defaults, every validation rule with its dotted path, env, secrets."""
# ruff: noqa: E501

from __future__ import annotations

import io
from pathlib import Path

import pytest

from controller.config import ConfigError, load_config, resolve_password, validate_command

EXAMPLE = Path(__file__).parents[2] / "deploy" / "examples" / "slotpilot.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return dict(info.value.problems)


def test_defaults_are_the_seed_and_hpa_numbers(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "cluster: {seeds: ['127.0.0.1:7000']}"))
    s = cfg.shards
    assert (s.min_shards, s.max_shards, s.scale_up_threshold, s.scale_down_threshold) == (
        2,
        10,
        0.8,
        0.3,
    )
    assert (s.scale_up_cooldown_seconds, s.scale_down_cooldown_seconds) == (300, 600)
    assert (cfg.probe.interval_seconds, cfg.probe.rise, cfg.probe.fall) == (2.0, 2, 3)
    assert cfg.routing.strategy == "least_connections" and cfg.http.port == 8080


def test_example_file_validates_and_maps_to_policies() -> None:
    cfg = load_config(EXAMPLE)
    email, events = cfg.consumers
    assert email.policy().fallback_replicas == 2 and email.policy().scale_up_pods == 4
    assert email.backlog_source().key == "queue:email"
    assert events.backlog_source().group == "workers"
    assert cfg.shards.policy().min_shards == 3


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("cluster: {seeds: []}", "cluster.seeds", "at least 1"),
        ("cluster: {seeds: ['nohost']}", "cluster.seeds", "host:port"),
        ("cluster: {seeds: ['a:1']}\nshards: {min_shards: 5, max_shards: 3}", "shards", "min_shards (5)"),
        ("cluster: {seeds: ['a:1']}\nshards: {scale_down_threshold: 0.9}", "shards", "scale_down_threshold"),
        ("cluster: {seeds: ['a:1']}\nshards: {scale_up_threshold: 1.5}", "shards.scale_up_threshold", "1"),
        ("cluster: {seeds: ['a:1']}\nprobe: {interval_seconds: 1, timeout_seconds: 2}", "probe", "timeout_seconds"),
        ("cluster: {seeds: ['a:1']}\nprobe: {rise: 0}", "probe.rise", "1"),
        ("cluster: {seeds: ['a:1']}\nrouting: {strategy: fastest}", "routing.strategy", "round_robin"),
        ("cluster: {seeds: ['a:1']}\nshards: {platform: mesos}", "shards.platform", "local"),
        ("cluster: {seeds: ['a:1'], password_env: A, password_file: B}", "cluster", "mutually exclusive"),
        ("cluster: {seeds: ['a:1']}\nshards: {min_shard: 3}", "shards.min_shard", "not permitted"),
        ("cluster: {seeds: ['a:1']}\nconsumers: [{name: Email!, source: {type: redis_list, key: q}}]", "consumers.0.name", "pattern"),
        ("cluster: {seeds: ['a:1']}\nconsumers: [{name: e, source: {type: kafka, key: q}}]", "consumers.0.source", "tag"),
        ("cluster: {seeds: ['a:1']}\nconsumers: [{name: e, source: {type: redis_stream, stream: s}}]", "consumers.0.source.redis_stream", "group"),
        ("cluster: {seeds: ['a:1']}\nconsumers: [{name: e, source: {type: redis_list, key: q}}, {name: e, source: {type: rq, queue: d}}]", "<root>", "unique"),
    ],
)  # fmt: skip
def test_each_rule_names_the_field(tmp_path: Path, text: str, path: str, fragment: str) -> None:
    found = problems(tmp_path, text)
    assert path in found, found
    assert fragment.lower() in found[path].lower()


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    assert "invalid YAML" in problems(tmp_path, "cluster: [")["<file>"]


def test_env_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTPILOT_PROBE__INTERVAL_SECONDS", "7")
    monkeypatch.setenv("SLOTPILOT_SHARDS__MAX_SHARDS", "12")
    cfg = load_config(write(tmp_path, "cluster: {seeds: ['a:1']}\nprobe: {interval_seconds: 3}"))
    assert cfg.probe.interval_seconds == 7 and cfg.shards.max_shards == 12


def test_password_from_env_and_file_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_PW", "hunter2-secret")
    cfg = load_config(write(tmp_path, "cluster: {seeds: ['a:1'], password_env: REDIS_PW}"))
    assert resolve_password(cfg) == "hunter2-secret"
    secret_file = tmp_path / "pw"
    secret_file.write_text("file-secret\n")
    cfg2 = load_config(
        write(tmp_path, f"cluster: {{seeds: ['a:1'], password_file: '{secret_file}'}}")
    )
    assert resolve_password(cfg2) == "file-secret"
    monkeypatch.setenv("SLOTPILOT_CLUSTER__PASSWORD", "env-only-secret")
    cfg3 = load_config(write(tmp_path, "cluster: {seeds: ['a:1']}"))
    assert resolve_password(cfg3) == "env-only-secret"
    for shown in (repr(cfg3), str(cfg3), cfg3.model_dump_json()):
        assert "env-only-secret" not in shown
    monkeypatch.delenv("REDIS_PW")
    with pytest.raises(ConfigError, match="REDIS_PW is not set"):
        resolve_password(cfg)


def test_validate_command(tmp_path: Path) -> None:
    out = io.StringIO()
    assert validate_command(str(EXAMPLE), out) == 0 and out.getvalue().startswith("ok:")
    out = io.StringIO()
    bad = write(tmp_path, "cluster: {seeds: ['a:1']}\nshards: {min_shards: 0, max_shard: 3}")
    assert validate_command(str(bad), out) == 2
    lines = out.getvalue().splitlines()
    assert any(line.startswith("shards.min_shards:") for line in lines)
    assert any(line.startswith("shards.max_shard:") for line in lines)


def test_reference_lists_every_field() -> None:
    from controller.config import render_reference

    table = render_reference()
    for key in ("shards.scale_up_threshold", "probe.rise", "consumers[].behavior.scale_up.pods",
                "cluster.tls.ca_file", "routing.breaker.fail_max", "consumers[].source"):  # fmt: skip
        assert f"| `{key}` |" in table
    assert "| `shards.platform` | `local` \\| `kubernetes` |" in table


def test_password_in_a_file_is_rejected_naming_the_field(tmp_path: Path) -> None:
    found = problems(tmp_path, "cluster: {seeds: ['a:1'], password: hunter2}")
    assert list(found) == ["cluster.password"]
    assert "not allowed in a file" in found["cluster.password"]
    assert "hunter2" not in found["cluster.password"]
    out = io.StringIO()
    bad = write(tmp_path, "cluster: {seeds: ['a:1'], password: hunter2}")
    assert validate_command(str(bad), out) == 2
    assert out.getvalue().startswith("cluster.password: not allowed in a file")


def test_non_utf8_file_and_non_string_keys_are_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("cluster: {seeds: ['a:1']}\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not UTF-8" in dict(info.value.problems)["<file>"]
    assert "0xe9" in dict(info.value.problems)["<file>"]
    assert "mapping" in problems(tmp_path, "1: 2")["<file>"]


def test_tls_hostname_check_is_explicit_and_on_by_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(write(tmp_path, "cluster: {seeds: ['a:1'], tls: {enabled: true}}"))
    with caplog.at_level("WARNING", logger="slotpilot.config"):
        options = cfg.cluster.tls.redis_options()
    assert options["ssl"] is True and options["ssl_check_hostname"] is True
    assert options["ssl_cert_reqs"] == "required" and not caplog.records
    off = load_config(
        write(tmp_path, "cluster: {seeds: ['a:1'], tls: {enabled: true, check_hostname: false}}")
    )
    with caplog.at_level("WARNING", logger="slotpilot.config"):
        options = off.cluster.tls.redis_options()
    assert options["ssl_check_hostname"] is False and options["ssl_cert_reqs"] == "required"
    assert "check_hostname is false" in caplog.text
    plain = load_config(write(tmp_path, "cluster: {seeds: ['a:1']}"))
    assert plain.cluster.tls.redis_options() == {}
    out = io.StringIO()
    opted_out = "cluster: {seeds: ['a:1'], tls: {enabled: true, check_hostname: false}}"
    assert validate_command(str(write(tmp_path, opted_out)), out) == 0
    assert out.getvalue().startswith("warning: cluster.tls.check_hostname is false")


def test_check_runnable_refuses_what_run_refuses(tmp_path: Path) -> None:
    from controller.config import check_runnable

    cfg = load_config(
        write(
            tmp_path,
            "cluster: {seeds: ['a:1'], password_env: NOT_SET_HERE,"
            " tls: {enabled: true, ca_file: /nonexistent/ca.pem}}\n"
            "shards: {platform: kubernetes, autoscale: true}",
        )
    )
    with pytest.raises(ConfigError) as info:
        check_runnable(cfg, env={})
    found = dict(info.value.problems)
    assert set(found) == {
        "kubernetes.statefulset", "cluster.password_env", "cluster.tls.ca_file"
    }  # fmt: skip
    local = load_config(write(tmp_path, "cluster: {seeds: ['a:1'], tls: {enabled: true}}\n"
                              "shards: {autoscale: true}"))  # fmt: skip
    with pytest.raises(ConfigError, match="cannot start TLS nodes"):
        check_runnable(local, env={})
    assert "NOT_SET_HERE is not set" in found["cluster.password_env"]
    check_runnable(load_config(write(tmp_path, "cluster: {seeds: ['a:1']}")), env={})
    out = io.StringIO()
    bad = write(tmp_path, "cluster: {seeds: ['a:1'], password_env: NOT_SET_HERE}")
    # validating away from the pod: the variable is set where slotpilot runs (a warning)
    assert validate_command(str(bad), out) == 0
    assert out.getvalue().startswith("warning: cluster.password_env:") and "NOT_SET_HERE" in (
        out.getvalue()
    )
