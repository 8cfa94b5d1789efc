"""`slotpilot run` on Kubernetes resharding a StatefulSet-backed cluster 3 → 5 → 3 shards
while a :class:`~balancer.ClusterClient` writes: the scale subresource grows the
StatefulSet by whole shards (primary + replica pods), the new pods join and take slots;
on the way down the highest ordinals are drained, proven empty and forgotten before the
StatefulSet is lowered, and their claims are deleted. Every acknowledged write reads back.

The shard count is driven by ``min_shards``/``max_shards`` (a restart with other bounds),
so the test does not depend on how busy this machine is."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from balancer import ClusterClient, OutcomeUnknown
from tests.k8s.emulator import KubeAPI
from tests.k8s.kubelet import Kubelet
from tests.k8s.test_run_kubernetes import (
    NS,
    Run,
    healthy_replicas,
    lease_holder,
    six_pods_three_shards,
    wait_until,
)


class Writer(threading.Thread):
    """SETs unique keys through the SDK until stopped; remembers what was acknowledged."""

    def __init__(self, seed: str) -> None:
        super().__init__(daemon=True)
        self.client = ClusterClient(seed, socket_timeout=2.0, retry_deadline=10.0)
        self.acked: dict[str, str] = {}
        self.unknown: list[str] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        for i in range(10_000_000):  # bounded by the stop event and the test's deadlines
            if self._halt.is_set():
                return
            key, value = f"k8s:{i}", str(i)
            try:
                self.client.set(key, value)
            except OutcomeUnknown:
                self.unknown.append(key)  # may or may not be applied: not checked
            except redis.RedisError as exc:
                self.errors.append(f"{key}: {exc!r}")
            else:
                self.acked[key] = value
            time.sleep(0.002)

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def config(folder: Path, seeds: list[str], shards: int) -> Path:
    path = folder / f"slotpilot-{shards}.yaml"
    path.write_text(
        f'cluster: {{seeds: ["{seeds[0]}", "{seeds[1]}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.4, rise: 1, fall: 2}\n"
        f"shards: {{platform: kubernetes, autoscale: true, min_shards: {shards},\n"
        f"         max_shards: {shards}, max_step: 2, replicas_per_shard: 1,\n"
        "         scale_up_cooldown_seconds: 0, scale_down_cooldown_seconds: 0,\n"
        "         settle_seconds: 0, node_timeout_ms: 2000, retry_base_seconds: 1,\n"
        "         lease_ttl_seconds: 3, capacity: {cpu_cores: null}}\n"
        "kubernetes: {namespace: default, statefulset: cache, lease_seconds: 3,\n"
        "             renew_deadline_seconds: 2, retry_seconds: 0.5}\n"
    )
    return path


def sts_replicas(api: KubeAPI) -> int:
    sts = api.get("apps/v1/statefulsets", NS, "cache")
    return int(sts["spec"]["replicas"]) if sts else -1


def shards_with_replica(seed: str) -> list[int]:
    return sorted(healthy_replicas(seed).values())


def test_run_reshards_a_statefulset_3_to_5_to_3_under_sdk_load(
    k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet], tmp_path: Path
) -> None:
    kubelet = make_kubelet()
    _, seeds = six_pods_three_shards(k8s_api, kubelet, claims=True)
    kubeconfig = k8s_api.write_kubeconfig(tmp_path / "kubeconfig")
    writer = Writer(seeds[0])
    writer.start()
    run: Run | None = None
    try:
        wait_until(lambda: len(writer.acked) > 200, "the writer under way")
        run = Run(config(tmp_path, seeds, 5), kubeconfig, "slotpilot-a")
        wait_until(lambda: lease_holder(k8s_api) == "slotpilot-a", "the leader")
        wait_until(lambda: sts_replicas(k8s_api) == 10, "the StatefulSet grown by 2 shards", 60)
        wait_until(lambda: shards_with_replica(seeds[0]) == [1] * 5
                   and run is not None and not run.status()["resharding"]["in_progress"],
                   "5 shards, each with a replica, slots moved", 120)  # fmt: skip
        # replicas change only through the scale subresource; the object itself only
        # gets the intent annotation
        patches = k8s_api.requests("PATCH", "/statefulsets/cache")
        assert [p.body for p in patches if p.path.endswith("/scale")] == [
            {"spec": {"replicas": 10}}
        ]
        assert all(set(p.body) == {"metadata"} for p in patches if p.path.endswith("/cache"))
        grown = len(writer.acked)
        assert run.stop() == 0

        run = Run(config(tmp_path, seeds, 3), kubeconfig, "slotpilot-a")
        wait_until(lambda: sts_replicas(k8s_api) == 6, "the StatefulSet back to 6 pods", 180)
        wait_until(lambda: not [m for m in kubelet.members("cache") if (m.ordinal or 0) >= 6],
                   "pods 6..9 gone", 60)  # fmt: skip
        wait_until(lambda: shards_with_replica(seeds[0]) == [1] * 3, "3 shards with a replica")

        def claims() -> set[str]:
            return {c["metadata"]["name"] for c in k8s_api.list("v1/persistentvolumeclaims", NS)}

        # a reused ordinal must come back empty: the leavers' claims are deleted
        wait_until(lambda: claims() == {f"data-cache-{o}" for o in range(6)}, "claims 6..9 gone")
        wait_until(lambda: len(writer.acked) > grown + 200, "writes after the scale-in")
        assert run.stop() == 0
        run = None
    finally:
        writer.stop()
        if run is not None and run.proc.poll() is None:
            run.proc.kill()
    assert not writer.errors, writer.errors[:5]
    assert len(writer.unknown) <= 2, writer.unknown
    check = redis.RedisCluster.from_url(f"redis://{seeds[0]}", decode_responses=True)
    try:
        keys = list(writer.acked)
        values = [check.get(k) for k in keys]
    finally:
        check.close()
    lost = [k for k, v in zip(keys, values, strict=True) if v != writer.acked[k]]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    writer.client.close()


def open_slots(seed: str) -> list[str]:
    with redis.Redis.from_url(f"redis://{seed}", decode_responses=True) as node:
        lines = str(node.execute_command("CLUSTER", "NODES")).splitlines()
    return [line for line in lines if "->-" in line or "-<-" in line]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_the_leader_stopped_mid_migration_the_follower_finishes(
    k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet], tmp_path: Path, sig: signal.Signals
) -> None:
    """Two `run` replicas; the leader is stopped after its first migration batch (the
    classic engine: many batches, slots open on the wire). SIGKILL: the follower takes
    the Lease once it expires and repairs what was left open. SIGTERM: the leader ends
    its current batch, leaves nothing open, releases the Lease and exits 0 at once. Either
    way the follower finishes the scale-out from the intent record on the StatefulSet:
    5 shards with replicas, every key still there."""
    kubelet = make_kubelet()
    _, seeds = six_pods_three_shards(k8s_api, kubelet)
    keys = {f"data:{i}": str(i) for i in range(20_000)}
    with ClusterClient(seeds[0]) as client:
        client.mset(keys)
    path = config(tmp_path, seeds, 5)
    path.write_text(path.read_text().replace("autoscale: true", "autoscale: true, engine: classic"))
    kubeconfig = k8s_api.write_kubeconfig(tmp_path / "kubeconfig")
    leader = Run(path, kubeconfig, "slotpilot-a")
    follower: Run | None = None
    try:
        wait_until(lambda: lease_holder(k8s_api) == "slotpilot-a", "the leader")
        follower = Run(path, kubeconfig, "slotpilot-b")
        wait_until(lambda: any('"moved"' in line for line in leader.lines),
                   "the leader's first migration batch", 60)  # fmt: skip
        leader.proc.send_signal(sig)
        killed_at = time.monotonic()
        code = leader.proc.wait(20)
        if sig == signal.SIGTERM:
            assert code == 0, leader.lines[-20:]
            print(f"exited {time.monotonic() - killed_at:.1f} s after SIGTERM")
            assert not open_slots(seeds[0])  # the current batch ended, nothing left open
            assert any('"scale_interrupted"' in line for line in leader.lines)
        intent = k8s_api.get("apps/v1/statefulsets", NS, "cache")["metadata"]["annotations"]
        assert any("intent" in name for name in intent), intent  # what the follower resumes
        wait_until(lambda: lease_holder(k8s_api) == "slotpilot-b", "the follower elected", 30)
        took_over = time.monotonic() - killed_at
        print(f"took over {took_over:.1f} s after the kill")
        wait_until(lambda: shards_with_replica(seeds[0]) == [1] * 5 and not open_slots(seeds[0])
                   and follower is not None and not follower.status()["resharding"]["in_progress"]
                   and follower.status()["resharding"]["last"] is not None,
                   "the follower finished the scale-out", 120)  # fmt: skip
        print(f"finished {time.monotonic() - killed_at:.1f} s after the kill")
        # the 3 s Lease, the 3 s cluster lease and a 0.5 s cycle, with room for a busy host
        assert took_over < 15, took_over
        assert sts_replicas(k8s_api) == 10
        assert follower.stop() == 0
        follower = None
    finally:
        for run in (leader, follower):
            if run is not None and run.proc.poll() is None:
                run.proc.kill()
    with ClusterClient(seeds[0]) as client:
        names = list(keys)
        assert client.mget(names) == [keys[k].encode() for k in names]
        assert client.dbsize() == len(keys)  # nothing extra (the lease key was released)
