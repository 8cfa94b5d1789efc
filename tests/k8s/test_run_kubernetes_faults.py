"""`slotpilot run` on Kubernetes while the API server misbehaves (faults injected by the
emulator): 500 and 429 answers are retried with backoff, a 409 on an update is re-read
and retried, and an unreachable API holds every target (no scale-down, no change to the
cluster), says so on ``/readyz`` and in ``slotpilot_kubernetes_api_up``, and is resumed
from once the API answers again."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis

from tests.k8s.emulator import KubeAPI
from tests.k8s.kubelet import Kubelet
from tests.k8s.test_kubelet import worker_deployment
from tests.k8s.test_run_kubernetes import (
    NS,
    Run,
    healthy_replicas,
    lease_holder,
    six_pods_three_shards,
    wait_until,
)


def membership(seed: str) -> list[tuple[str, str, str]]:
    """(id, role and primary, slots) of every node: what "the cluster untouched" compares
    (not the flags: a busy host can show a node as ``fail?`` for a moment)."""
    with redis.Redis.from_url(f"redis://{seed}", decode_responses=True) as node:
        lines = str(node.execute_command("CLUSTER", "NODES")).splitlines()
    rows = [line.split() for line in lines]
    role = {r[0]: "master" if "master" in r[2] else "replica" for r in rows}
    return sorted((r[0], f"{role[r[0]]} of {r[3]}", " ".join(r[8:])) for r in rows)


def readyz(run: Run) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{run.url}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(run: Run, name: str) -> list[str]:
    with urllib.request.urlopen(f"{run.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [line for line in text.splitlines() if line.startswith(name)]


def test_api_faults_are_retried_or_hold_every_target_and_leave_the_cluster_alone(
    k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    kubelet = make_kubelet(worker_command=[sys.executable, "-c", "import time; time.sleep(120)"])
    _, seeds = six_pods_three_shards(k8s_api, kubelet)
    wait_until(lambda: sorted(healthy_replicas(seeds[0]).values()) == [1, 1, 1]
               and all(" of -" not in role for _, role, _ in membership(seeds[0])
                       if role.startswith("replica")),
               "every replica known as one by the seed")  # fmt: skip
    before = membership(seeds[0])
    k8s_api.create("apps/v1/deployments", {**worker_deployment("worker"), "metadata": {
        "name": "worker", "namespace": NS, "labels": {"app": "worker"}}})  # fmt: skip
    jobs = redis.RedisCluster.from_url(f"redis://{seeds[0]}")
    config = tmp_path / "slotpilot.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{seeds[0]}", "{seeds[1]}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.4, rise: 1, fall: 2}\n"
        "shards: {platform: kubernetes, autoscale: true, min_shards: 3, max_shards: 3,\n"
        "         node_timeout_ms: 2000, forget_failed_after_seconds: 1,\n"
        "         lease_ttl_seconds: 3, capacity: {cpu_cores: null}}\n"
        "kubernetes: {namespace: default, statefulset: cache, lease_seconds: 3,\n"
        "             renew_deadline_seconds: 2, retry_seconds: 0.5}\n"
        "consumers:\n"
        "  - name: worker\n"
        "    source: {type: redis_list, key: jobs}\n"
        "    target_backlog_per_replica: 100\n"
        "    max_replicas: 5\n"
        "    behavior: {scale_down_stabilization_seconds: 0}\n"
    )
    run = Run(config, k8s_api.write_kubeconfig(tmp_path / "kubeconfig"), "slotpilot-a")
    try:
        wait_until(lambda: lease_holder(k8s_api) == "slotpilot-a", "the leader")

        def replicas() -> int:
            deployment = k8s_api.get("apps/v1/deployments", NS, "worker")
            return int(deployment["spec"]["replicas"]) if deployment else -1

        # 500s, then 429s on the scale subresource: retried with backoff, then it lands
        scale = "/deployments/worker/scale"
        k8s_api.fail_next(500, 3, verb="PATCH", path=scale)
        k8s_api.fail_next(429, 2, verb="PATCH", path=scale)
        jobs.rpush("jobs", *range(250))  # 250 / 100 per replica -> 3
        wait_until(lambda: replicas() == 3, "scaled to 3 through 500s and 429s", 60)
        answered = [r.status for r in k8s_api.requests("PATCH", scale)]
        assert answered[:5] == [500, 500, 500, 429, 429] and answered[-1] == 200, answered

        # a 409 (conflict) on the update: re-read and retried
        k8s_api.fail_next(409, 1, verb="PATCH", path=scale)
        jobs.rpush("jobs", *range(200))  # 450 -> 5
        wait_until(lambda: replicas() == 5, "scaled to 5 through a 409", 60)
        assert 409 in [r.status for r in k8s_api.requests("PATCH", scale)]

        # unreachable: every target held (the idle queue would scale the workers down),
        # the cluster untouched, /readyz and the metric say why
        k8s_api.go_offline()
        jobs.delete("jobs")
        wait_until(lambda: readyz(run)[0] == 503, "/readyz unready while the API is away", 30)
        _, body = readyz(run)
        assert "Kubernetes API unreachable" in json.loads(body)["reason"]
        assert any(line.endswith(" 0.0") for line in metric(run, "slotpilot_kubernetes_api_up"))
        wait_until(lambda: run.status()["lease"]["holding"] is False,
                   "the leader stepped down at its renew deadline", 15)  # fmt: skip
        assert membership(seeds[0]) == before
        k8s_api.go_online()
        assert replicas() == 5  # held: nothing scaled while the API was away

        # back: leadership retaken, the held decision carried out, /readyz ready again
        wait_until(lambda: lease_holder(k8s_api) == "slotpilot-a", "the Lease retaken", 30)
        try:
            wait_until(lambda: replicas() == 0, "the idle workers scaled down", 60)
        except AssertionError:
            print("".join(run.lines[-60:]))
            print(run.status())
            raise
        wait_until(lambda: readyz(run)[0] == 200, "ready again", 30)
        assert membership(seeds[0]) == before  # nothing to mend, nothing was touched
        assert run.stop() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        jobs.close()
