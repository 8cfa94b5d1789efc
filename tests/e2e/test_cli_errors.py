"""User mistakes get a message, not a traceback: each bad case as a real `slotpilot`
subprocess, asserting its exit code (2 bad input, 1 unreachable, 3 refused), the flag or
field or address it names, and that no traceback reached the user."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.cli import build_parser
from controller.localcluster import LocalCluster, free_port

CLI = [sys.executable, "-m", "controller.cli"]
ENV = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"} | {"PYTHONUNBUFFERED": "1"}


def slotpilot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)  # fmt: skip


@dataclass(frozen=True)
class _File:
    """A file argument, written into the test's directory when the case runs."""

    name: str
    data: bytes = b""

    def path(self, tmp: Path) -> str:
        if self.data:
            (tmp / self.name).write_bytes(self.data)
        return str(tmp / self.name)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-errors")


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


DEAD = f"127.0.0.1:{free_port()}"  # nothing listens there


def _cases() -> dict[str, tuple[list[str | _File], int, str]]:
    dead, busy = DEAD, "BUSY"
    ok_config = _File("ok.yaml", f'cluster: {{seeds: ["{dead}"]}}\n'.encode())
    unset_env = _File("env.yaml", b"cluster: {seeds: ['a:1'], password_env: SP_UNSET_PW}\n")
    return {
        "rebalance of a dead seed": (["rebalance", "--seed", dead], 1, f"cannot reach {dead}"),
        "fix of a dead seed": (["fix", "--seed", dead], 1, f"cannot reach {dead}"),
        "scale of a dead seed": (
            ["scale", "--shards", "3", "--seed", dead], 1, f"cannot reach {dead}"
        ),
        "rebalance negative threshold": (
            ["rebalance", "--seed", dead, "--threshold", "-5"], 2, "argument --threshold"
        ),
        "rebalance threshold not a number": (
            ["rebalance", "--seed", dead, "--threshold", "lots"], 2, "argument --threshold"
        ),
        "seed without a port": (["rebalance", "--seed", "localhost"], 2, "argument --seed"),
        "run port out of range": (
            ["run", "--config", ok_config, "--port", "99999"], 2, "argument --port"
        ),
        "run on a port in use": (
            ["run", "--config", ok_config, "--port", busy], 2, "--port: cannot listen on"
        ),
        "local-cluster with no shards": (["local-cluster", "--shards", "0"], 2, "--shards"),
        "local-cluster with negative replicas": (
            ["local-cluster", "--replicas", "-1"], 2, "--replicas"
        ),
        "scale to zero shards": (["scale", "--shards", "0", "--seed", dead], 2, "--shards"),
        "demo below its start": (["demo", "--max-shards", "2"], 2, "--max-shards"),
        "missing CA file": (
            ["fix", "--seed", dead, "--cacert", _File("nope.pem")], 2, "argument --cacert"
        ),
        "hostname opt-out without TLS": (
            ["fix", "--seed", dead, "--no-check-hostname"], 2, "--no-check-hostname"
        ),
        "validate a non-UTF-8 file": (
            ["validate", _File("latin1.yaml", b"cluster: {seeds: ['a:1']} # caf\xe9\n")],
            2, "not UTF-8",
        ),
        "validate a missing file": (["validate", _File("missing.yaml")], 2, "cannot read"),
        "validate a password in the file": (
            ["validate", _File("pw.yaml", b"cluster: {seeds: ['a:1'], password: x}\n")],
            2, "cluster.password: not allowed in a file",
        ),
        "validate warns of what run refuses": (
            ["validate", unset_env], 0,
            "warning: cluster.password_env: environment variable SP_UNSET_PW is not set",
        ),
        "run refuses the same": (
            ["run", "--config", unset_env, "--port", "0"], 2, "SP_UNSET_PW is not set"
        ),
        "kubernetes autoscale without its StatefulSet": (
            ["plan", "--config", _File("k8s.yaml", b"cluster: {seeds: ['a:1']}\n"
                                       b"shards: {platform: kubernetes, autoscale: true}\n")],
            2, "kubernetes.statefulset: required for shards.autoscale on Kubernetes",
        ),
        "plan of an unreachable cluster": (
            ["plan", "--config", ok_config], 1, f"cannot reach {dead}: {dead}: connection"
        ),
        "status of no controller": (
            ["status", "--url", f"http://{dead}"], 1, f"cannot reach http://{dead}/v1/status"
        ),
        "status of a non-URL": (["status", "--url", "ftp:/x"], 2, "--url"),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_cases()))
def test_bad_case_exits_with_a_message_and_no_traceback(
    name: str, tmp: Path, busy_port: int
) -> None:
    args, code, message = _cases()[name]
    argv = [a.path(tmp) if isinstance(a, _File) else a for a in args]
    out = slotpilot(*[str(busy_port) if a == "BUSY" else a for a in argv])
    assert out.returncode == code, (out.returncode, out.stderr)
    assert message in out.stderr + out.stdout, out.stderr  # validate reports on stdout
    assert "Traceback" not in out.stderr + out.stdout


def test_version_and_help_with_defaults_for_every_option() -> None:
    out = slotpilot("--version")
    assert out.returncode == 0 and out.stdout.startswith("slotpilot ")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(commands, dict)
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = slotpilot(name, "--help").stdout
        assert "--log-level" in text, name
    assert "(default: 2.0)" in slotpilot("rebalance", "--help").stdout
    assert "(default: 127.0.0.1)" in slotpilot("run", "--help").stdout


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _run(config: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str], str]:
    proc = subprocess.Popen([*CLI, "run", "--config", str(config), "--port", "0", *extra],
                            stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    lines: list[str] = []
    assert proc.stderr is not None
    threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listening = [json.loads(x) for x in list(lines) if '"listening"' in x]
        if listening:
            return proc, lines, str(listening[0]["url"])
        assert proc.poll() is None, lines
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"run did not listen: {lines}")


def _wait(check: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _config(tmp_path: Path, seed: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        f'cluster: {{seeds: ["{seed}"]}}\n'
        "probe: {interval_seconds: 0.3, timeout_seconds: 0.2, rise: 1, fall: 1}\n"
    )
    return path


@pytest.mark.parametrize("server_flavor", ["valkey"])  # about the CLI, not the server
def test_readyz_waits_for_a_node_and_the_scheduler_is_quiet(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proc, lines, url = _run(_config(tmp_path, dead))
    try:  # probe cycles run, but none reaches a node: not ready
        time.sleep(1.5)
        assert _get(f"{url}/readyz") == 503 and _get(f"{url}/healthz") == 200
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    proc, lines, url = _run(_config(tmp_path, cluster.seed))
    try:
        assert _wait(lambda: _get(f"{url}/readyz") == 200)
        time.sleep(1.5)  # several probe and reconcile jobs
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    assert not [line for line in lines if "Running job" in line or "executed successfully" in line]
    assert any('"listening"' in line for line in lines)
