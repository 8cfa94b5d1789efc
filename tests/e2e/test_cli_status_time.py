"""`/v1/status` says when its view was taken in wall-clock ISO-8601 time; `plan` honours
`tls.check_hostname: false` (after the loop.py change the lead applies)."""

from __future__ import annotations

import json
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.localcluster import LocalCluster
from tests.e2e.test_cli_errors import _run, _wait

CLI = [sys.executable, "-m", "controller.cli"]


@pytest.mark.parametrize("server_flavor", ["valkey"])
def test_status_taken_at_is_wall_clock_iso8601(tmp_path: Path, cluster: LocalCluster) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.3, timeout_seconds: 0.2}\n"
    )
    proc, _, url = _run(config)
    try:

        def status() -> dict[str, object]:
            with urllib.request.urlopen(f"{url}/v1/status", timeout=5) as response:
                return dict(json.loads(response.read()))

        assert _wait(lambda: status().get("ready") is True)
        taken_at = datetime.fromisoformat(str(status()["taken_at"]))
        assert taken_at.tzinfo is not None
        assert abs(datetime.now(UTC) - taken_at) < timedelta(seconds=60)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


@pytest.mark.parametrize("server_flavor", ["valkey"])
def test_status_asks_the_port_the_config_names(tmp_path: Path, cluster: LocalCluster) -> None:
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = tmp_path / "run.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.3, timeout_seconds: 0.2}\n"
        f"http: {{port: {port}}}\n"
    )
    proc = subprocess.Popen([*CLI, "run", "--config", str(config)], stderr=subprocess.DEVNULL)
    try:

        def status() -> subprocess.CompletedProcess[str]:
            return subprocess.run([*CLI, "status", "--config", str(config), "--json"],
                                  capture_output=True, text=True, timeout=30)  # fmt: skip

        assert _wait(lambda: status().returncode == 0), status().stderr
        assert "ready" in json.loads(status().stdout)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    missing = subprocess.run([*CLI, "status", "--config", str(tmp_path / "none.yaml")],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert missing.returncode == 2 and "--config" in missing.stdout + missing.stderr
