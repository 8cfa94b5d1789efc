"""`slotpilot run` on the local platform: consumer replicas do not inherit the
controller's environment, and they stop when the controller stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from controller.localcluster import LocalCluster

CLI = [sys.executable, "-m", "controller.cli"]
REPORT = (
    "import json, os, sys, time; "
    "open(os.path.join(sys.argv[1], str(os.getpid())), 'w').write(json.dumps(dict(os.environ))); "
    "time.sleep(120)"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not alive
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_consumers_get_no_controller_secret_and_stop_with_the_controller(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    reports = tmp_path / "replicas"
    reports.mkdir()
    config = tmp_path / "slotpilot.yaml"
    command = [sys.executable, "-c", REPORT, str(reports)]
    config.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.3, rise: 1, fall: 2}\n"
        "consumers:\n"
        "  - name: jobs\n"
        "    source: {type: redis_list, key: jobs}\n"
        "    min_replicas: 2\n"
        f"    command: {json.dumps(command)}\n"
    )
    env = dict(os.environ, CONTROLLER_ONLY_SECRET="do-not-leak")
    run = subprocess.Popen([*CLI, "run", "--config", str(config), "--port", "0"],
                           stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(reports.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # let both finish writing
        pids = [int(p.name) for p in reports.iterdir()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        for path in reports.iterdir():
            seen = json.loads(path.read_text())
            assert "CONTROLLER_ONLY_SECRET" not in seen
            assert seen["SLOTPILOT_TARGET"] == "jobs" and "PATH" in seen
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=10)
    assert not any(_alive(pid) for pid in pids)


def test_a_crashing_consumer_is_reported_in_status_and_metrics(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    import threading
    import urllib.request

    config = tmp_path / "slotpilot.yaml"
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    config.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.3, rise: 1, fall: 2}\n"
        "consumers:\n"
        "  - name: flaky\n"
        "    source: {type: redis_list, key: jobs}\n"
        "    min_replicas: 1\n"
        f"    command: {json.dumps(command)}\n"
    )
    run = subprocess.Popen([*CLI, "run", "--config", str(config), "--port", "0"],
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(run.stderr or ()), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None and time.monotonic() < deadline:
            url = next((json.loads(x)["url"] for x in list(lines) if '"listening"' in x), None)
            time.sleep(0.1)
        assert url is not None, lines

        def crashes() -> dict[str, object]:
            with urllib.request.urlopen(f"{url}/v1/status", timeout=5) as response:
                return dict(json.loads(response.read()).get("consumer_crashes", {}))

        def failed_exits() -> int:
            report = crashes().get("flaky")
            return int(report["failed_exits"]) if isinstance(report, dict) else 0

        while failed_exits() < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        report = crashes()["flaky"]
        assert isinstance(report, dict) and report["failed_exits"] >= 1
        assert report["last_exit_code"] == 3
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'slotpilot_consumer_failed_exits_total{target="flaky"}' in metrics
        assert any("exited with 3" in line for line in lines)
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=30)
