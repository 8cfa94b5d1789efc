"""The shard StatefulSet when the world around it misbehaves, on the emulated API with real
server pods: claims of neighbours and hand-made ones survive a scale-in, a claim a pod
mounts or that is not ours is refused loudly, Pending pods are scaled back instead of
growing the StatefulSet on every retry, and a leaving set the StatefulSet cannot remove
is refused before anything moves."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.platform import PlatformError
from controller.platform.kubernetes import KubeApi, StatefulSetNodes
from controller.platform.kubernetes.workloads import LeavingRefused
from tests.k8s.emulator import KubeAPI
from tests.k8s.kubelet import Kubelet
from tests.k8s.test_kubelet import redis_statefulset

NS = "default"
STS, PVCS, PODS = "apps/v1/statefulsets", "v1/persistentvolumeclaims", "v1/pods"


@pytest.fixture
def api(k8s_api: KubeAPI) -> Iterator[KubeApi]:
    with k8s_api.client() as api_client:
        yield KubeApi(api_client, backoff_base=0.01, backoff_cap=0.05, request_timeout=3)


def statefulset(k8s_api: KubeAPI, name: str, **spec: Any) -> None:
    body = redis_statefulset(name, claims=True, **spec)
    body["metadata"]["namespace"] = NS
    k8s_api.create(STS, body)


def claims(k8s_api: KubeAPI) -> set[str]:
    return {c["metadata"]["name"] for c in k8s_api.list(PVCS, NS)}


def scale_patches(k8s_api: KubeAPI, name: str) -> list[int]:
    """The replica counts the operator asked for, in order."""
    out = []
    for request in k8s_api.requests("PATCH", f"/statefulsets/{name}/scale"):
        body = json.loads(request.body) if isinstance(request.body, str | bytes) else request.body
        out.append(int(body["spec"]["replicas"]))
    return out


def test_a_scale_in_deletes_exactly_its_own_claims(
    api: KubeApi, k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    """``cache`` leaving ordinals 2 and 3 deletes ``data-cache-2/3`` only: not the claims
    of ``session-cache`` (same suffix) nor a hand-made ``backup-my-cache-3``."""
    statefulset(k8s_api, "cache")
    statefulset(k8s_api, "session-cache")
    k8s_api.create(PVCS, {"metadata": {"name": "backup-my-cache-3", "namespace": NS},
                          "spec": {"accessModes": ["ReadWriteOnce"]}})  # fmt: skip
    cache = StatefulSetNodes(api, NS, "cache", ready_timeout=30, poll_seconds=0.05)
    session = StatefulSetNodes(api, NS, "session-cache", ready_timeout=30, poll_seconds=0.05)
    addresses = cache.add_nodes(4, [])
    session.add_nodes(4, [])
    kubelet.wait_ready("session-cache", 4)
    before = claims(k8s_api)
    assert {"data-session-cache-2", "data-session-cache-3", "data-cache-3"} <= before
    cache.remove_nodes(addresses[2:])
    assert claims(k8s_api) == before - {"data-cache-2", "data-cache-3"}
    assert [m.pod for m in kubelet.members("session-cache")] == [
        f"session-cache-{i}" for i in range(4)
    ]


def test_a_claim_that_is_mounted_or_not_ours_is_refused_loudly(
    api: KubeApi, k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    statefulset(k8s_api, "cache")
    cache = StatefulSetNodes(api, NS, "cache", ready_timeout=30, poll_seconds=0.05)
    addresses = cache.add_nodes(4, [])
    # a debug pod mounts ordinal 3's claim; ordinal 2's claim lost the StatefulSet's labels
    volume = {"name": "d", "persistentVolumeClaim": {"claimName": "data-cache-3"}}
    k8s_api.create(PODS, {"metadata": {"name": "debug", "namespace": NS}, "spec": {
        "containers": [{"name": "sh", "image": "busybox"}], "volumes": [volume]}})  # fmt: skip
    k8s_api.patch(PVCS, NS, "data-cache-2", {"metadata": {"labels": {"app": "other"}}})
    with pytest.raises(PlatformError) as info:
        cache.remove_nodes(addresses[2:])
    text = str(info.value)
    assert "data-cache-3 is still mounted by pod debug" in text
    assert "data-cache-2 lacks the StatefulSet's labels" in text
    assert {"data-cache-2", "data-cache-3"} <= claims(k8s_api)
    # a 403 on the delete is a failure, not a warning
    k8s_api.delete(PODS, NS, "debug")
    k8s_api.patch(PVCS, NS, "data-cache-2", {"metadata": {"labels": {"app": "cache"}}})
    k8s_api.fail_next(403, 1, verb="DELETE", path="/persistentvolumeclaims/")
    with pytest.raises(PlatformError, match="forbidden"):
        cache._delete_claims(range(2, 4))
    cache._delete_claims(range(2, 4))
    assert not {"data-cache-2", "data-cache-3"} & claims(k8s_api)


def test_pending_pods_are_scaled_back_and_a_retry_asks_for_the_same_size(
    api: KubeApi, k8s_api: KubeAPI, make_kubelet: Any
) -> None:
    kubelet = make_kubelet(capacity=2)
    statefulset(k8s_api, "cache")
    cache = StatefulSetNodes(api, NS, "cache", ready_timeout=2, poll_seconds=0.05)
    first = cache.add_nodes(2, [])
    for _ in range(3):  # the loop's retries: each asks for 4, never 6, 8, …
        with pytest.raises(PlatformError, match=r"cache-2 \(Pending: Unschedulable\)"):
            cache.add_nodes(2, first)
        assert cache.replicas() == 2
    assert max(scale_patches(k8s_api, "cache")) == 4
    assert "data-cache-2" not in claims(k8s_api)
    assert cache.pending() == []  # scaled back: nothing left waiting
    k8s_api.patch(STS, NS, "cache", {"spec": {"replicas": 3}})  # asked for by hand
    kubelet_wait(lambda: cache.pending() == ["cache-2 (Pending: Unschedulable)"])
    k8s_api.patch(STS, NS, "cache", {"spec": {"replicas": 2}})
    kubelet.set_capacity(4)
    cache.ready_timeout = 30
    added = cache.add_nodes(2, first)
    assert [cache.ordinal(a) for a in added] == [2, 3]
    assert scale_patches(k8s_api, "cache")[-1] == 4


def test_an_absolute_size_reuses_ready_pods_a_lost_call_left(
    api: KubeApi, k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    """The StatefulSet already has the new pods (the call that asked for them was cut
    off): a repeat asks for no more, and returns them."""
    statefulset(k8s_api, "cache")
    cache = StatefulSetNodes(api, NS, "cache", ready_timeout=30, poll_seconds=0.05)
    first = cache.add_nodes(2, [])
    k8s_api.patch(STS, NS, "cache", {"spec": {"replicas": 4}})
    kubelet.wait_ready("cache", 4)
    patches = len(scale_patches(k8s_api, "cache"))
    added = cache.add_nodes(2, first)
    assert [cache.ordinal(a) for a in added] == [2, 3]
    assert len(scale_patches(k8s_api, "cache")) == patches and cache.replicas() == 4


def test_a_leaving_set_the_statefulset_cannot_remove_is_refused_first(
    api: KubeApi, k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    statefulset(k8s_api, "cache", podManagementPolicy="OrderedReady")
    cache = StatefulSetNodes(api, NS, "cache", ready_timeout=30, poll_seconds=0.05)
    addresses = cache.add_nodes(4, [])
    cache.check_leaving(addresses[2:])  # the highest ordinals, all Ready: fine
    with pytest.raises(LeavingRefused, match=r"highest ordinals \[2, 3\].*ordinals \[1, 3\]"):
        cache.check_leaving([addresses[1], addresses[3]])
    hung = kubelet.member("cache-0")
    assert hung.server is not None
    hung.server.signal(signal.SIGSTOP)  # hung: the readiness probe fails
    try:
        kubelet_wait(lambda: not kubelet.member("cache-0").ready)
        with pytest.raises(LeavingRefused, match=r"cache-0 \(not Ready\)"):
            cache.check_leaving(addresses[2:])
        # the StatefulSet itself agrees: lowered replicas do not remove a pod meanwhile
        k8s_api.patch(STS, NS, "cache", {"spec": {"replicas": 3}})
        kubelet_wait(lambda: False, timeout=1.0, check=False)
        assert len(kubelet.members("cache")) == 4
    finally:
        hung.server.signal(signal.SIGCONT)
    kubelet.wait_ready("cache", 3)


def test_parallel_statefulsets_only_need_the_leaving_pods_ready(
    api: KubeApi, k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    statefulset(k8s_api, "cache", podManagementPolicy="Parallel")
    cache = StatefulSetNodes(api, NS, "cache", ready_timeout=30, poll_seconds=0.05)
    addresses = cache.add_nodes(4, [])
    hung = kubelet.member("cache-0")
    assert hung.server is not None
    hung.server.signal(signal.SIGSTOP)
    try:
        kubelet_wait(lambda: not kubelet.member("cache-0").ready)
        cache.check_leaving(addresses[2:])
        hung3 = kubelet.member("cache-3")
        assert hung3.server is not None
        hung3.server.signal(signal.SIGSTOP)
        try:
            kubelet_wait(lambda: not kubelet.member("cache-3").ready)
            with pytest.raises(LeavingRefused, match=r"cache-3 \(not Ready\)"):
                cache.check_leaving(addresses[2:])
        finally:
            hung3.server.signal(signal.SIGCONT)
    finally:
        hung.server.signal(signal.SIGCONT)


def kubelet_wait(
    condition: Any, timeout: float = 10.0, check: bool = True, step: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    if check:
        raise TimeoutError("condition not met")


# -- the intent record: compare-and-set, re-read before every decision --------------------


def test_the_intent_record_is_written_only_over_what_was_read(
    api: KubeApi, k8s_api: KubeAPI
) -> None:
    from controller.intent import IntentConflict, IntentRecord, PendingChange
    from controller.platform.kubernetes.intent_store import IntentAnnotation

    statefulset(k8s_api, "cache")
    mine, theirs = IntentAnnotation(api, NS, "cache"), IntentAnnotation(api, NS, "cache")
    assert mine.load() == theirs.load() == IntentRecord()
    step = PendingChange("scale_out", 3, 4, 1_790_000_000.0)
    theirs.save(IntentRecord(last_up_at=1_790_000_000.0, change=step, holder="b"))
    stale = IntentRecord(change=PendingChange("scale_out", 4, 5, 1_790_000_100.0), holder="a")
    with pytest.raises(IntentConflict, match="another controller"):
        mine.save(stale)
    assert IntentAnnotation(api, NS, "cache").load().holder == "b"  # nothing written
    mine.load()
    # the object changing under a write (a status update: a newer resourceVersion) is
    # retried on a fresh read, since the record itself is still the one read
    k8s_api.fail_next(409, 1, verb="PATCH", path="/statefulsets/cache")
    mine.save(IntentRecord(last_up_at=1_790_000_000.0, holder="a"))
    assert IntentAnnotation(api, NS, "cache").load().holder == "a"


def test_a_new_leader_decides_from_the_record_as_it_is_now_not_as_it_was(
    api: KubeApi, k8s_api: KubeAPI
) -> None:
    """A standby loaded the record while the leader's 2 -> 3 step was in flight; the
    leader finished (record: no change, just scaled up) and stopped. Taking over, the
    standby must not repeat a step, nor write ``last_up_at: null`` over the record."""
    import time as clock

    from controller.config import SlotpilotConfig
    from controller.intent import IntentRecord, PendingChange
    from controller.localcluster import LocalCluster
    from controller.loop import Controller
    from controller.platform.kubernetes import KubernetesPlatform
    from controller.platform.kubernetes.intent_store import IntentAnnotation

    statefulset(k8s_api, "cache")
    with LocalCluster(2, 0) as cluster:
        cfg = SlotpilotConfig.model_validate({
            "cluster": {"seeds": [cluster.seed]},
            "shards": {"min_shards": 2, "max_shards": 4, "replicas_per_shard": 0,
                       "scale_up_cooldown_seconds": 300,
                       "capacity": {"cpu_cores": None, "ops_per_second": 1}},
        })  # fmt: skip
        leader = IntentAnnotation(api, NS, "cache")
        leader.load()
        leader.save(IntentRecord(change=PendingChange("scale_out", 2, 3, clock.time()),
                                 holder="leader"))  # fmt: skip
        standby = Controller(cfg, KubernetesPlatform(api, NS), nodes=cluster,
                             intent=IntentAnnotation(api, NS, "cache"))  # fmt: skip
        assert standby.intent.change is not None  # the stale picture it started with
        scaled_at = clock.time()
        leader.save(IntentRecord(last_up_at=scaled_at, change=None, holder="leader"))
        try:
            standby.probe_once()
            [decision] = [d for d in standby.reconcile_once() if d.target == "shards"]
        finally:
            standby.stop()
        assert decision.desired == decision.current == 2, decision
        assert len(cluster.nodes) == 2  # no node was added
        after = IntentAnnotation(api, NS, "cache").load()
        assert after.change is None and after.last_up_at == pytest.approx(scaled_at, abs=1)


# -- someone else scales the StatefulSet down ------------------------------------------------


def test_an_outside_scale_down_is_held_and_reported_even_with_the_cluster_down(
    api: KubeApi, k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    """``kubectl scale --replicas 2`` on a 6-pod, 3-shard cluster takes shard 2's primary
    and its replica: the elected leader (whose in-cluster lock is unreachable: the cluster
    is down) holds — no forget, no repair, no scale — and says why, until the size is back."""
    from controller.config import SlotpilotConfig
    from controller.loop import Controller
    from controller.platform.kubernetes import KubernetesPlatform
    from controller.topology import connector, read_topology
    from tests.k8s.test_run_kubernetes import six_pods_three_shards

    _, addresses = six_pods_three_shards(k8s_api, kubelet, claims=True)
    from balancer import ClusterClient

    with ClusterClient(addresses[0]) as writer:
        writer.mset({f"k{i}": i for i in range(600)})
    cfg = SlotpilotConfig.model_validate({
        "cluster": {"seeds": addresses[:2]},
        "probe": {"interval_seconds": 0.5, "timeout_seconds": 0.4, "rise": 1, "fall": 1},
        "shards": {"min_shards": 3, "max_shards": 3, "replicas_per_shard": 1,
                   "node_timeout_ms": 2000, "forget_failed_after_seconds": 0.5,
                   "lease_ttl_seconds": 3, "capacity": {"cpu_cores": None}},
    })  # fmt: skip
    posted: list[tuple[str, str, str, bool]] = []
    nodes = StatefulSetNodes(api, NS, "cache", ready_timeout=5, poll_seconds=0.05)
    controller = Controller(cfg, KubernetesPlatform(api, NS), nodes=nodes,
                            leader=lambda: True, events=lambda *e: posted.append(e))  # fmt: skip
    known_before = {e.node_id for e in read_topology(connector(), addresses[0]).entries}
    try:
        controller.probe_once()
        controller.reconcile_once()
        assert not [e for e in posted if e[1] == "WorkloadBelowCluster"]
        k8s_api.patch(STS, NS, "cache", {"spec": {"replicas": 2}})
        kubelet.wait_ready("cache", 2)
        # past the node timeout (the removed nodes marked failed) and the forget grace
        decisions = []

        def held_with_failed_nodes() -> bool:
            controller.probe_once()
            decisions.extend(d for d in controller.reconcile_once() if d.target == "shards")
            held = controller.status()["resharding"]["held"] or ""
            return "cluster has 3" in held

        kubelet_wait(held_with_failed_nodes, timeout=40, step=0.3)
        for _ in range(5):  # and it keeps holding: nothing forgotten after the grace
            held_with_failed_nodes()
            time.sleep(0.3)
        decision = decisions[-1]
        assert "statefulset_below_cluster" in decision.blocked_by, decision
        warnings = [e for e in posted if e[1] == "WorkloadBelowCluster"]
        assert len(warnings) == 1 and warnings[0][3] is True, posted
        assert "declares 2 nodes but the cluster has" in warnings[0][2]
        held = controller.status()["resharding"]["held"]
        assert "declares 2 nodes but the cluster has 3" in held, held
        assert nodes.replicas() == 2  # not scaled back up over the lost shard's claims
        known = {e.node_id for e in read_topology(connector(), addresses[0]).entries}
        assert known == known_before  # nobody forgotten, the stranded slots' owner kept
        assert controller.status()["lease"]["holding"] is True
        # scaled back: the pods return with their claims, so their nodes.conf (old ids,
        # old slots) but, without persistence, no keys: the cluster says ok, the data is gone
        k8s_api.patch(STS, NS, "cache", {"spec": {"replicas": 6}})
        kubelet.wait_ready("cache", 6)

        def restored() -> bool:
            controller.probe_once()
            controller.reconcile_once()
            return any(e[1] == "WorkloadRestored" for e in posted)

        kubelet_wait(restored, timeout=90, step=0.3)

        def reported() -> bool:
            controller.probe_once()
            controller.reconcile_once()
            return any(e[1] == "NodeBackEmpty" for e in posted)

        kubelet_wait(reported, timeout=90, step=0.3)
        empty = [e for e in posted if e[1] == "NodeBackEmpty"]
        assert len(empty) == 1 and empty[0][3] is True, posted
        assert "back under its old id" in empty[0][2] and "they are lost" in empty[0][2]
        held = int(empty[0][2].split(" held ")[1].split(" keys")[0])
        assert 100 < held < 600  # shard 2's share of the 600 keys
    finally:
        controller.stop()


def test_a_wait_for_pending_pods_gives_up_when_the_controller_may_no_longer_act(
    api: KubeApi, k8s_api: KubeAPI, make_kubelet: Any
) -> None:
    make_kubelet(capacity=0)  # nothing can be scheduled
    statefulset(k8s_api, "cache")
    cache = StatefulSetNodes(api, NS, "cache", ready_timeout=600, poll_seconds=0.05)
    until = time.monotonic() + 1.0
    cache.keep_going = lambda: time.monotonic() < until  # then: SIGTERM, or leadership lost
    began = time.monotonic()
    with pytest.raises(PlatformError, match="stopped waiting for pods of ordinals"):
        cache.add_nodes(2, [])
    assert time.monotonic() - began < 60  # not the 600 s ready timeout


def test_followers_serve_the_leaders_routing_table_during_a_scale_in(
    api: KubeApi, k8s_api: KubeAPI
) -> None:
    """Clients behind the Service reach any replica: a follower marks the leader's
    draining nodes too (from the intent record) and answers with the same ETag."""
    from controller.config import SlotpilotConfig
    from controller.intent import PendingChange
    from controller.localcluster import LocalCluster
    from controller.loop import Controller
    from controller.platform.kubernetes import KubernetesPlatform
    from controller.platform.kubernetes.intent_store import IntentAnnotation

    statefulset(k8s_api, "cache")
    with LocalCluster(3, 0) as cluster:
        cfg = SlotpilotConfig.model_validate({
            "cluster": {"seeds": [cluster.seed]},
            "shards": {"min_shards": 2, "max_shards": 3, "replicas_per_shard": 0,
                       "capacity": {"cpu_cores": None, "ops_per_second": 1_000_000}},
        })  # fmt: skip

        def controller(leads: bool) -> Controller:
            return Controller(cfg, KubernetesPlatform(api, NS), nodes=cluster,
                              intent=IntentAnnotation(api, NS, "cache"),
                              leader=lambda: leads)  # fmt: skip

        leader, follower = controller(True), controller(False)
        leaving = max(n.address for n in cluster.nodes)
        try:
            for c in (leader, follower):
                c.probe_once()
            leader._save_intent(PendingChange("scale_in", 3, 2, time.time()))
            leader._mark_draining([leaving])  # what a scale-in announces before moving
            follower.reconcile_once()
            for c in (leader, follower):
                c.probe_once()
            states = {e.address: e.state for e in follower.routing.nodes}
            assert states[leaving] == "draining", states
            assert follower.routing.etag == leader.routing.etag
            assert follower.routing.nodes == leader.routing.nodes
            # the scale-in ends: the record is cleared, the follower's table follows
            leader._save_intent(None)
            follower.reconcile_once()
            follower.probe_once()
            states = {e.address: e.state for e in follower.routing.nodes}
            assert states[leaving] == "up", states
        finally:
            leader.stop()
            follower.stop()


def test_a_cluster_from_another_chart_names_its_client_port_in_the_config(
    api: KubeApi, k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    """Another chart's pods (Bitnami's port is ``tcp-redis``): with
    ``kubernetes.redis_port_name`` the pods map to their nodes; without it, to none."""
    from controller.config import SlotpilotConfig

    body = redis_statefulset("other", replicas=2)
    body["metadata"]["namespace"] = NS
    ports = body["spec"]["template"]["spec"]["containers"][0]["ports"]
    ports[0]["name"] = "tcp-redis"
    k8s_api.create(STS, body)
    kubelet.wait_ready("other", 2)
    cfg = SlotpilotConfig.model_validate({
        "cluster": {"seeds": ["127.0.0.1:1"]},
        "kubernetes": {"statefulset": "other", "redis_port_name": "tcp-redis"},
    })  # fmt: skip
    named = StatefulSetNodes(api, NS, "other", port_name=cfg.kubernetes.redis_port_name)
    addresses = [n.address for n in named.pods()]
    assert len(addresses) == 2 and all(a and a.startswith("127.0.0.1:") for a in addresses)
    assert [n.address for n in StatefulSetNodes(api, NS, "other").pods()] == [None, None]


def test_a_mounted_claim_deleted_anyway_stays_terminating_until_its_pod_is_gone(
    k8s_api: KubeAPI, api: KubeApi
) -> None:
    """The emulator's kubernetes.io/pvc-protection, over HTTP: what the operator's own
    refusal to delete a mounted claim guards against."""
    from kubernetes import client

    k8s_api.create(PVCS, {"metadata": {"name": "data-x", "namespace": NS}})
    volume = {"name": "d", "persistentVolumeClaim": {"claimName": "data-x"}}
    k8s_api.create(PODS, {"metadata": {"name": "user", "namespace": NS}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}], "volumes": [volume]}})  # fmt: skip
    api.call("delete pvc", api.core.delete_namespaced_persistent_volume_claim, "data-x", NS,
             body=client.V1DeleteOptions())  # fmt: skip
    claim = k8s_api.get(PVCS, NS, "data-x")
    assert claim is not None and claim["metadata"]["deletionTimestamp"]
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    k8s_api.delete(PODS, NS, "user")
    assert k8s_api.get(PVCS, NS, "data-x") is None
