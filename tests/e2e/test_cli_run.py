"""`slotpilot run / status / plan / validate` as a user runs them: real processes, HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.localcluster import LocalCluster

CLI = [sys.executable, "-m", "controller.cli"]


def _config(tmp_path: Path, cluster: LocalCluster) -> Path:
    path = tmp_path / "slotpilot.yaml"
    path.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.3, rise: 1, fall: 2}\n"
        "consumers:\n"
        "  - name: jobs\n"
        "    source: {type: redis_list, key: jobs}\n"
        f"    command: {json.dumps([sys.executable, '-c', 'import time; time.sleep(60)'])}\n"
    )
    return path


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for(check: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _start_run(config: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """`slotpilot run` on any free port; its stderr lines collect in the list as they come."""
    proc = subprocess.Popen([*CLI, "run", "--config", str(config), "--port", "0"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines: list[str] = []
    stderr = proc.stderr
    assert stderr is not None
    threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")), daemon=True).start()
    return proc, lines


@pytest.fixture
def running(
    tmp_path: Path, cluster: LocalCluster
) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    proc, lines = _start_run(_config(tmp_path, cluster))
    url: list[str] = []

    def listening() -> bool:
        for line in lines:
            if '"listening"' in line:
                url.append(json.loads(line)["url"])
                return True
        return False

    try:
        wait_for(listening)
        yield proc, url[0], lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_run_serves_every_endpoint_and_stops_on_sigterm(
    running: tuple[subprocess.Popen[str], str, list[str]], cluster: LocalCluster
) -> None:
    proc, url, lines = running
    assert get(f"{url}/healthz")[0] == 200
    wait_for(lambda: get(f"{url}/readyz")[0] == 200)
    status, headers, body = get(f"{url}/v1/routing")
    assert status == 200 and headers["Cache-Control"] == "no-cache"
    table = json.loads(body)
    assert len(table["nodes"]) == 6 and {n["state"] for n in table["nodes"]} == {"up"}
    assert get(f"{url}/v1/routing", {"If-None-Match": headers["ETag"]})[0] in (200, 304)
    metrics = {f.name: f for f in text_string_to_metric_families(get(f"{url}/metrics")[2].decode())}
    node_up = [s for s in metrics["slotpilot_node_up"].samples]
    assert len(node_up) == 6 and all(s.value == 1 for s in node_up)
    assert metrics["slotpilot_cluster_state_ok"].samples[0].value == 1
    assert get(f"{url}/nope")[0] == 404
    status_doc = json.loads(get(f"{url}/v1/status")[2])
    assert status_doc["ready"] and len(status_doc["shards"]) == 3

    table_text = subprocess.run(
        [*CLI, "status", "--url", url], capture_output=True, text=True, timeout=30
    )
    assert table_text.returncode == 0 and "cluster utilization" in table_text.stdout
    assert cluster.seed in table_text.stdout

    victim = cluster.shard_map()[0][1][0]
    victim.kill()

    def victim_down() -> bool:
        nodes = json.loads(get(f"{url}/v1/routing")[2])["nodes"]
        return any(n["address"] == victim.address and n["state"] == "down" for n in nodes)

    wait_for(victim_down)
    assert json.loads(get(f"{url}/v1/routing")[2])["version"] > table["version"]
    wait_for(lambda: any('"target": "jobs"' in line for line in lines))  # decisions are logged

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert any('"stopping"' in line for line in lines)


def test_validate_and_plan(tmp_path: Path, cluster: LocalCluster) -> None:
    config = _config(tmp_path, cluster)
    ok = subprocess.run([*CLI, "validate", str(config)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "cluster: {seeds: ['x:1']}\nshards: {min_shards: 9, max_shards: 3}\nprobe: {rise: 0}\n"
    )
    result = subprocess.run(
        [*CLI, "validate", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "probe.rise:" in result.stdout and "shards:" in result.stdout
    run_bad = subprocess.run(
        [*CLI, "run", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert run_bad.returncode == 2 and "probe.rise" in run_bad.stderr

    plan = subprocess.run(
        [*CLI, "plan", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    decisions = {d["target"]: d for d in json.loads(plan.stdout)["decisions"]}
    assert decisions["shards"]["current"] == 3 and decisions["jobs"]["current"] == 0
    assert decisions["shards"]["reason"]
    human = subprocess.run(
        [*CLI, "plan", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert "shards: 3 ->" in human.stdout and "jobs: 0 -> 0" in human.stdout


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_local_cluster_command_runs_until_stopped(signum: int, code: int) -> None:
    """SIGTERM is its normal stop (0), Ctrl-C an interruption (130, as every command); it
    says how to stop it, and the nodes stop with it."""
    proc = subprocess.Popen([*CLI, "local-cluster", "--shards", "2", "--replicas", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        info = json.loads(line)
        assert len(info["nodes"]) == 2
        hint = proc.stderr.readline()  # type: ignore[union-attr]
        assert "Ctrl-C" in hint
        from balancer import ClusterClient

        with ClusterClient(info["seed"]) as client:
            client.set("k", "v")
            assert client.get("k") == b"v"
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == code
        import redis

        host, port = info["seed"].split(":")
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host, int(port), socket_timeout=1).ping()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_missing_password_env_exits_2(tmp_path: Path, cluster: LocalCluster) -> None:
    config = tmp_path / "pw.yaml"
    config.write_text(f'cluster: {{seeds: ["{cluster.seed}"], password_env: NO_SUCH_VAR_SET}}\n')
    result = subprocess.run(
        [*CLI, "plan", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert (
        result.returncode == 2
        and "cluster.password_env: environment variable NO_SUCH_VAR_SET" in result.stderr
    )


def test_run_with_autoscale_reshards_an_idle_cluster_down(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    """`shards.autoscale: true`: the controller process drains, forgets and stops a shard."""
    path = tmp_path / "autoscale.yaml"
    path.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.3, rise: 1, fall: 2}\n"
        "shards: {min_shards: 2, max_shards: 3, autoscale: true, node_timeout_ms: 2000,\n"
        f"         state_dir: '{tmp_path / 'nodes'}',\n"
        "         capacity: {ops_per_second: 1000000, cpu_cores: null}}\n"
    )
    proc, lines = _start_run(path)
    try:
        wait_for(lambda: any('"event": "scaled"' in line for line in lines), seconds=90)
        scaled = json.loads(next(line for line in lines if '"event": "scaled"' in line))
        assert (scaled["before"], scaled["after"], len(scaled["removed"])) == (3, 2, 2)
        url = next(json.loads(x)["url"] for x in lines if '"listening"' in x)
        metrics = {
            f.name: f for f in text_string_to_metric_families(get(f"{url}/metrics")[2].decode())
        }
        moved = metrics["slotpilot_migrated_slots"].samples[0].value
        assert moved == scaled["slots_moved"] > 5000
        batches = [json.loads(x) for x in lines if '"event": "moved"' in x]
        assert sum(b["slots"] for b in batches) == moved
        assert len([n for n in cluster.nodes if n.running]) == 4  # the leaving shard stopped
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
