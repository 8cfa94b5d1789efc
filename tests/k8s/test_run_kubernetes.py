"""`slotpilot run` with ``shards.platform: kubernetes``, as processes, against the emulated
API over HTTP (kubeconfig) and real server pods from the kubelet: one elected leader
acts (consumer Deployment through the scale subresource, Events), a second replica
follows, and SIGTERM hands the Lease over at once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.k8s.emulator import KubeAPI
from tests.k8s.kubelet import Kubelet
from tests.k8s.test_kubelet import redis_statefulset, worker_deployment

CLI = [sys.executable, "-m", "controller.cli"]
NS = "default"
TOTAL_SLOTS = 16384


def form_cluster(addresses: list[str]) -> None:
    """Meet the pods and give each its share of the slots (what a bootstrap Job does)."""
    nodes = [redis.Redis.from_url(f"redis://{a}", decode_responses=True) for a in addresses]
    first_host, first_port = addresses[0].split(":")
    for node in nodes[1:]:
        node.execute_command("CLUSTER", "MEET", first_host, first_port)
    per = TOTAL_SLOTS // len(nodes)
    for i, node in enumerate(nodes):
        end = TOTAL_SLOTS - 1 if i == len(nodes) - 1 else (i + 1) * per - 1
        node.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, end)
    wait_until(lambda: all(n.cluster("info")["cluster_state"] == "ok" for n in nodes),
               "cluster_state ok", 30)  # fmt: skip


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Run:
    """One `slotpilot run` process with its stderr collected."""

    def __init__(self, config: Path, kubeconfig: Path, pod: str) -> None:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": pod}
        self.proc = subprocess.Popen([*CLI, "run", "--config", str(config), "--port", "0"],
                                     stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(lambda: self.url is not None or self.proc.poll() is not None, "listening")
        assert self.proc.poll() is None, self.lines

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def url(self) -> str | None:
        for line in list(self.lines):
            if '"listening"' in line:
                return str(json.loads(line)["url"])
        return None

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/v1/status", timeout=5) as response:
            return dict(json.loads(response.read()))

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


@pytest.fixture
def cluster_pods(k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet]) -> list[str]:
    """Three cluster pods of StatefulSet "cache", formed into a cluster; the same kubelet
    runs Deployments' pods as sleeping workers."""
    kubelet = make_kubelet(worker_command=[sys.executable, "-c", "import time; time.sleep(120)"])
    body = redis_statefulset("cache")
    body["metadata"]["namespace"] = NS
    body["spec"]["replicas"] = 3
    k8s_api.create("apps/v1/statefulsets", body)
    members = kubelet.wait_ready("cache", 3)
    addresses = [f"127.0.0.1:{m.port}" for m in sorted(members, key=lambda m: m.ordinal or 0)]
    form_cluster(addresses)
    return addresses


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)


def lease_holder(k8s_api: KubeAPI) -> str | None:
    lease = k8s_api.get("coordination.k8s.io/v1/leases", NS, "slotpilot")
    return None if lease is None else lease["spec"].get("holderIdentity")


def test_run_on_kubernetes_one_leader_scales_a_deployment_and_hands_over(
    k8s_api: KubeAPI,
    cluster_pods: list[str],
    runs: list[Run],
    tmp_path: Path,
) -> None:
    k8s_api.create("apps/v1/deployments", {**worker_deployment("worker"), "metadata": {
        "name": "worker", "namespace": NS, "labels": {"app": "worker"}}})  # fmt: skip
    jobs = redis.RedisCluster.from_url(f"redis://{cluster_pods[0]}")
    jobs.rpush("jobs", *range(250))  # 250 / 100 per replica -> 3 replicas
    kubeconfig = k8s_api.write_kubeconfig(tmp_path / "kubeconfig")
    config = tmp_path / "slotpilot.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{cluster_pods[0]}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.4, rise: 1, fall: 2}\n"
        "shards: {platform: kubernetes, min_shards: 3, max_shards: 3, lease_ttl_seconds: 3,\n"
        "         capacity: {cpu_cores: null}}\n"
        "kubernetes: {namespace: default, statefulset: cache, lease_seconds: 3,\n"
        "             renew_deadline_seconds: 2, retry_seconds: 0.5}\n"
        "consumers:\n"
        "  - name: worker\n"
        "    source: {type: redis_list, key: jobs}\n"
        "    target_backlog_per_replica: 100\n"
        "    max_replicas: 5\n"
        "    behavior: {scale_down_stabilization_seconds: 0}\n"
    )
    first = Run(config, kubeconfig, "slotpilot-a")
    runs.append(first)
    wait_until(lambda: lease_holder(k8s_api) == "slotpilot-a", "the Lease held by slotpilot-a")

    def replicas() -> int:
        deployment = k8s_api.get("apps/v1/deployments", NS, "worker")
        return int(deployment["spec"]["replicas"]) if deployment else -1

    wait_until(lambda: replicas() == 3, "the Deployment scaled to 3 through its scale subresource")
    patches = [r.path for r in k8s_api.requests("PATCH", "/deployments/worker")]
    assert patches and all(p.endswith("/scale") for p in patches)

    def scaled_up() -> bool:  # posted right after the PATCH lands, not before
        events = [e for e in k8s_api.list("v1/events", NS)
                  if e["involvedObject"]["name"] == "worker"]  # fmt: skip
        return any(e["reason"] == "ScaledUp" and "0 -> 3" in e["message"] for e in events)

    wait_until(scaled_up, "a ScaledUp Event for 0 -> 3", 10)

    second = Run(config, kubeconfig, "slotpilot-b")
    runs.append(second)
    wait_until(lambda: second.status().get("ready") is True, "the second replica ready")
    jobs.rpush("jobs", *range(250))  # more work: only the leader may act on it
    wait_until(lambda: replicas() == 5, "the leader scaled to 5")
    follower = second.status()
    assert follower["lease"]["holding"] is False
    assert not [r for r in k8s_api.requests("PATCH", "/scale") if "slotpilot-b" in r.path]

    started = time.monotonic()
    assert first.stop() == 0  # SIGTERM: the Lease is released, not left to expire
    wait_until(lambda: lease_holder(k8s_api) == "slotpilot-b", "slotpilot-b took over", 10)
    assert time.monotonic() - started < 3.0 + 2.0  # well before a 3 s lease + renew window
    jobs.delete("jobs")
    wait_until(lambda: replicas() < 5, "the new leader acts (scales the idle Deployment down)",
               60)  # fmt: skip
    assert second.stop() == 0
    jobs.close()


def form_cluster_with_replicas(addresses: list[str], shards: int) -> None:
    """The first ``shards`` pods are primaries; each other pod replicates one of them."""
    form_cluster(addresses[:shards])
    nodes = [redis.Redis.from_url(f"redis://{a}", decode_responses=True) for a in addresses]
    host, port = addresses[0].split(":")
    ids = [n.execute_command("CLUSTER", "MYID") for n in nodes[:shards]]
    for i, node in enumerate(nodes[shards:]):
        node.execute_command("CLUSTER", "MEET", host, port)
        primary = ids[i % shards]
        wait_until(partial(_replicate, node, primary), "replica attached", 30)


def _replicate(node: redis.Redis, primary_id: str) -> bool:
    try:
        node.execute_command("CLUSTER", "REPLICATE", primary_id)
    except redis.ResponseError:
        return False  # the primary is not known to it yet
    return True


def is_replica(seed: str, address: str) -> bool:
    with redis.Redis.from_url(f"redis://{seed}", decode_responses=True) as node:
        lines = str(node.execute_command("CLUSTER", "NODES")).splitlines()
    return any(f" {address}@" in f" {line.split()[1]}" and "slave" in line.split()[2]
               and "fail" not in line.split()[2] for line in lines)  # fmt: skip


def healthy_replicas(address: str) -> dict[str, int]:
    """Per primary id owning slots: its replicas that are not failing."""
    with redis.Redis.from_url(f"redis://{address}", decode_responses=True) as node:
        lines = str(node.execute_command("CLUSTER", "NODES")).splitlines()
    rows = [line.split() for line in lines]
    counts = {r[0]: 0 for r in rows if "master" in r[2] and len(r) > 8}
    for r in rows:
        if r[3] in counts and "fail" not in r[2]:
            counts[r[3]] += 1
    return counts


def six_pods_three_shards(
    api: KubeAPI, kubelet: Kubelet, claims: bool = False
) -> tuple[list[Any], list[str]]:
    """StatefulSet "cache" of 6 real server pods formed into 3 shards x 1 replica
    (``claims``: with a volumeClaimTemplate, one PVC per pod)."""
    body = redis_statefulset("cache", claims=claims)
    body["metadata"]["namespace"] = NS
    body["spec"]["replicas"] = 6
    api.create("apps/v1/statefulsets", body)
    members = sorted(kubelet.wait_ready("cache", 6), key=lambda m: m.ordinal or 0)
    addresses = [f"127.0.0.1:{m.port}" for m in members]
    form_cluster_with_replicas(addresses, 3)
    return members, addresses


def healing_config(folder: Path, addresses: list[str], forget_after: float) -> Path:
    """`run` on Kubernetes with autoscale on (the node source heals), 3 shards fixed."""
    config = folder / "slotpilot.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{addresses[0]}", "{addresses[1]}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.4, rise: 1, fall: 2}\n"
        "shards: {platform: kubernetes, autoscale: true, min_shards: 3, max_shards: 3,\n"
        f"         node_timeout_ms: 2000, forget_failed_after_seconds: {forget_after},\n"
        "         retry_base_seconds: 1, lease_ttl_seconds: 3, capacity: {cpu_cores: null}}\n"
        "kubernetes: {namespace: default, statefulset: cache, lease_seconds: 3,\n"
        "             renew_deadline_seconds: 2, retry_seconds: 0.5}\n"
    )
    return config


def test_a_rescheduled_replica_pod_is_healed_back_into_the_cluster(
    k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet], runs: list[Run], tmp_path: Path
) -> None:
    kubelet = make_kubelet()
    members, addresses = six_pods_three_shards(k8s_api, kubelet)
    config = healing_config(tmp_path, addresses, forget_after=5)
    kubeconfig = k8s_api.write_kubeconfig(tmp_path / "kubeconfig")
    run = Run(config, kubeconfig, "slotpilot-a")
    runs.append(run)
    wait_until(lambda: lease_holder(k8s_api) == "slotpilot-a", "the leader")
    assert sorted(healthy_replicas(addresses[0]).values()) == [1, 1, 1]

    moved = kubelet.reschedule("cache-5")  # a replica's pod: new port, empty data dir
    assert moved.port != members[5].port
    new_address = f"127.0.0.1:{moved.port}"
    wait_until(lambda: sorted(healthy_replicas(addresses[0]).values()) == [1, 1, 1]
               and is_replica(addresses[0], new_address),
               "every shard with a replica again: the rescheduled pod", 60)  # fmt: skip
    events = [e["reason"] for e in k8s_api.list("v1/events", NS)]
    assert "NodeRejoined" in events, (events, run.lines[-30:])
    down = [e["message"] for e in k8s_api.list("v1/events", NS) if e["reason"] == "NodeDown"]
    assert any(f"127.0.0.1:{members[5].port} (replica" in m for m in down), (down, events)

    def repairs_counted() -> bool:  # counted once repair_structure has returned
        with urllib.request.urlopen(f"{run.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        found = dict(re.findall(r'^slotpilot_repairs_total\{kind="(\w+)"\} (\S+)$', text, re.M))
        return float(found.get("rejoin", 0)) >= 1 and float(found.get("replica_attached", 0)) >= 1

    wait_until(repairs_counted, "the rejoin and the replica attached counted", 10)
    # after its grace period the dead node is forgotten everywhere
    old = f"127.0.0.1:{members[5].port}"
    wait_until(lambda: old not in str(redis.Redis.from_url(f"redis://{addresses[0]}")
                                      .execute_command("CLUSTER", "NODES")),
               "the dead node forgotten", 60)  # fmt: skip
    assert run.stop() == 0
