"""Errors that say why: an unreachable address is named once with its cause; a password
a cluster does not check is warned about; a bad value from the environment says so."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller.errors import cause
from controller.localcluster import LocalCluster

CLI = [sys.executable, "-m", "controller.cli"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("SLOTPILOT_", "REDISCLI"))}
ENV["SLOTPILOT_LOCAL_PORTS"] = os.environ.get("SLOTPILOT_LOCAL_PORTS", "20000-25999")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when this returns


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=env or ENV)  # fmt: skip


def test_an_unreachable_node_is_named_once_with_its_cause() -> None:
    port = _closed_port()
    out = _cli("rebalance", "--seed", f"127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"cannot reach 127.0.0.1:{port}: connection refused (nothing listens there)"
    )


def test_an_unreachable_controller_is_named_once_with_its_cause() -> None:
    port = _closed_port()
    out = _cli("status", "--url", f"http://127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"cannot reach http://127.0.0.1:{port}/v1/status: connection refused "
        "(nothing listens there)"
    )
    assert "urlopen" not in out.stderr


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (TimeoutError("timed out"), "timed out"),
        (OSError("Error 111 connecting to h:1. Connection refused."), "connection refused"),
        (OSError("WRONGPASS invalid username-password pair"), "wrong user or password"),
        (OSError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "TLS"),
        (OSError("something new"), "something new"),
    ],
)
def test_cause_says_why_in_a_few_words(error: OSError, said: str) -> None:
    assert said in cause(error)


@pytest.mark.parametrize("server_flavor", ["valkey"])
def test_a_password_the_cluster_does_not_check_is_warned_about(cluster: LocalCluster) -> None:
    out = _cli("rebalance", "--seed", cluster.seed, "--dry-run",
               env={**ENV, "REDISCLI_AUTH": "not-needed"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"warning: {cluster.seed} answers without a password" in out.stderr
    quiet = _cli("rebalance", "--seed", cluster.seed, "--dry-run")
    assert "warning" not in quiet.stderr


def test_a_bad_value_from_the_environment_says_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cluster: {seeds: ['127.0.0.1:7000']}\n")
    out = _cli("validate", str(config), env={**ENV, "SLOTPILOT_PROBE__INTERVAL_SECONDS": "-1"})
    assert out.returncode == 2
    assert out.stdout.strip() == (
        "probe.interval_seconds: Input should be greater than 0 "
        "(from the environment: SLOTPILOT_PROBE__INTERVAL_SECONDS)"
    )
    assert _cli("validate", str(config)).returncode == 0
