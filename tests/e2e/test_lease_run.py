"""Two `slotpilot run` processes on one cluster: only the lease holder acts, the other
says who holds it, and takes over when the holder is killed (-9) and its lease expires."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from balancer import ClusterClient
from controller.localcluster import LocalCluster
from tests.e2e.test_cli_run import _start_run, get, wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _config(tmp_path: Path, cluster: LocalCluster) -> Path:
    path = tmp_path / "lease.yaml"
    path.write_text(
        f'cluster: {{seeds: ["{cluster.seed}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.3, rise: 1, fall: 2}\n"
        "shards: {lease_ttl_seconds: 3}\n"
        "consumers:\n"
        "  - name: jobs\n"
        "    source: {type: redis_list, key: 'queue:jobs'}\n"
        "    target_backlog_per_replica: 10\n"
        "    max_replicas: 5\n"
        f"    command: {json.dumps(SLEEPER)}\n"
    )
    return path


def _url(lines: list[str]) -> str | None:
    for line in list(lines):
        if '"listening"' in line:
            return str(json.loads(line)["url"])
    return None


def _status(url: str) -> dict[str, Any]:
    code, _, body = get(f"{url}/v1/status")
    assert code == 200
    result: dict[str, Any] = json.loads(body)
    return result


def test_one_actor_and_takeover_after_kill(tmp_path: Path, cluster: LocalCluster) -> None:
    config = _config(tmp_path, cluster)
    with ClusterClient(cluster.seed) as client:
        client.rpush("queue:jobs", *range(30))  # wants 3 consumers
    first, first_lines = _start_run(config)
    procs = [first]
    try:
        wait_for(lambda: _url(first_lines) is not None)
        first_url = str(_url(first_lines))
        wait_for(lambda: _status(first_url)["lease"]["holding"])
        second, second_lines = _start_run(config)
        procs.append(second)
        wait_for(lambda: _url(second_lines) is not None)
        second_url = str(_url(second_lines))

        def second_refused() -> bool:
            jobs = _status(second_url)["decisions"].get("jobs")
            return jobs is not None and "lease" in jobs["blocked_by"]

        wait_for(second_refused)
        wait_for(lambda: _status(first_url)["decisions"]["jobs"]["current"] == 3)  # it acts
        holder, follower = _status(first_url), _status(second_url)
        assert holder["lease"]["holder"].endswith(f":{first.pid}")
        assert follower["lease"]["holding"] is False
        assert follower["lease"]["holder"] == holder["lease"]["holder"]
        assert follower["decisions"]["jobs"]["current"] == 0  # the other never did
        assert "not acting: cluster is managed by" in follower["decisions"]["jobs"]["reason"]
        assert follower["ready"] and follower["nodes"]  # it still probes and publishes

        os.kill(first.pid, signal.SIGKILL)  # no release: the key must expire (TTL 3 s)
        first.wait(timeout=10)
        wait_for(lambda: _status(second_url)["lease"]["holding"], seconds=15)
        wait_for(lambda: _status(second_url)["decisions"]["jobs"]["current"] == 3)
        taken = _status(second_url)["lease"]
        assert taken["holder"].endswith(f":{second.pid}")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        with ClusterClient(cluster.seed) as client:  # released on stop, not left to expire
            assert client.get("{slotpilot}:lease") is None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
