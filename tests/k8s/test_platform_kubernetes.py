"""The Kubernetes platform against the emulated API over HTTP: Lease election, the scale
subresource for Deployments and the shard StatefulSet (real server pods from the
kubelet fixture), Events, and API faults."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
import pytest
import redis
from kubernetes import client

from controller.config import SlotpilotConfig
from controller.intent import IntentError, IntentRecord, PendingChange
from controller.leadership import LeaderTiming
from controller.localcluster import LocalCluster
from controller.loop import Controller
from controller.platform import PlatformError
from controller.platform.kubernetes import (
    Conflict,
    EventRecorder,
    KubeApi,
    KubeApiError,
    KubernetesPlatform,
    LeaderElector,
    StatefulSetNodes,
)
from controller.platform.kubernetes.intent_store import INTENT_ANNOTATION, IntentAnnotation
from tests.k8s.emulator import KubeAPI
from tests.k8s.kubelet import Kubelet
from tests.k8s.test_kubelet import redis_statefulset, worker_deployment

NS = "default"
FAST = LeaderTiming(lease_seconds=3, renew_deadline_seconds=2, retry_seconds=0.2)


@pytest.fixture
def api(k8s_api: KubeAPI) -> Iterator[KubeApi]:
    with k8s_api.client() as api_client:
        yield KubeApi(api_client, backoff_base=0.01, backoff_cap=0.05, request_timeout=3)


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall_at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return self.wall_at

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall_at += timedelta(seconds=seconds)


def elector(api: KubeApi, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(api, NS, "slotpilot", identity, FAST, clock=clock.monotonic,
                         wall=clock.wall)  # fmt: skip


def test_one_leader_takeover_after_expiry_and_release(api: KubeApi, k8s_api: KubeAPI) -> None:
    clock = Clock()
    a, b = elector(api, "pod-a", clock), elector(api, "pod-b", clock)
    assert a.step() is True and a.is_leader
    assert b.step() is False and b.holder == "pod-a"
    clock.advance(1)
    assert a.step() and not b.step()  # renewed: still a's
    lease = k8s_api.get("coordination.k8s.io/v1/leases", NS, "slotpilot")
    assert lease is not None and lease["spec"]["holderIdentity"] == "pod-a"

    clock.advance(FAST.lease_seconds)  # a stops renewing (it hangs, say)
    assert not a.is_leader  # past its renew deadline: it stops acting at once
    assert b.step() is True  # expired: b takes it
    assert a.step() is False and a.holder == "pod-b"
    lease = k8s_api.get("coordination.k8s.io/v1/leases", NS, "slotpilot")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1

    b.release()  # SIGTERM: handed back at once, no lease duration to wait out
    assert not b.is_leader
    assert a.step() is True


def test_racing_candidates_one_wins_by_resource_version(api: KubeApi) -> None:
    clock = Clock()
    a, b = elector(api, "pod-a", clock), elector(api, "pod-b", clock)
    a.step()
    assert not b.step()  # b has seen a's record: its age counts from now
    clock.advance(10)  # expired for everyone
    lease: Any = api.coordination.read_namespaced_lease("slotpilot", NS)
    assert b.step() is True
    lease.spec.holder_identity = "pod-a"
    lease.spec.renew_time = clock.wall()
    with pytest.raises(client.ApiException) as info:
        api.coordination.replace_namespaced_lease("slotpilot", NS, lease)  # stale version
    assert info.value.status == 409
    assert a.step() is False and a.holder == "pod-b"


def test_leader_that_cannot_reach_the_api_stops_at_the_renew_deadline(
    api: KubeApi, k8s_api: KubeAPI
) -> None:
    clock = Clock()
    a = elector(api, "pod-a", clock)
    assert a.step()
    k8s_api.go_offline()
    try:
        clock.advance(FAST.renew_deadline_seconds / 2)
        assert a.step() is True  # a failed renewal within the deadline: still leader
        clock.advance(FAST.renew_deadline_seconds / 2)
        assert a.step() is False and not a.is_leader
    finally:
        k8s_api.go_online()


def test_consumer_deployment_through_the_scale_subresource(
    api: KubeApi, k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet]
) -> None:
    make_kubelet(worker_command=[sys.executable, "-c", "import time; time.sleep(60)"])
    k8s_api.create("apps/v1/deployments", {**worker_deployment("jobs"), "metadata": {
        "name": "jobs", "namespace": NS, "labels": {"app": "jobs"}}})  # fmt: skip
    platform = KubernetesPlatform(api, NS)
    assert platform.get_replicas("jobs") == 0
    platform.set_replicas("jobs", 2)
    assert platform.get_replicas("jobs") == 2
    wait_until(lambda: sum(m.ready for m in platform.members("jobs")) == 2, "2 ready workers")
    patches = [r.path for r in k8s_api.requests("PATCH", "/deployments/jobs")]
    assert patches and all(p.endswith("/deployments/jobs/scale") for p in patches)


def test_a_deployment_another_autoscaler_scales_is_refused(api: KubeApi, k8s_api: KubeAPI) -> None:
    k8s_api.create("apps/v1/deployments", {**worker_deployment("jobs"), "metadata": {
        "name": "jobs", "namespace": NS, "labels": {"app": "jobs"}}})  # fmt: skip
    k8s_api.create("autoscaling/v2/horizontalpodautoscalers", {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "jobs-hpa", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "jobs"}, "minReplicas": 1, "maxReplicas": 5},
    })  # fmt: skip
    with pytest.raises(PlatformError, match="HorizontalPodAutoscaler jobs-hpa"):
        KubernetesPlatform(api, NS).set_replicas("jobs", 3)
    assert KubernetesPlatform(api, NS).get_replicas("jobs") == 0


def test_statefulset_nodes_grow_shrink_by_highest_ordinals_and_drop_claims(
    api: KubeApi, k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    body = redis_statefulset("cache", claims=True)
    body["metadata"]["namespace"] = NS
    k8s_api.create("apps/v1/statefulsets", body)
    nodes = StatefulSetNodes(api, NS, "cache", ready_timeout=30, poll_seconds=0.05)
    first = nodes.add_nodes(2, [])
    more = nodes.add_nodes(2, first)
    addresses = first + more
    assert len(set(addresses)) == 4
    for address in addresses:
        host, port = address.split(":")
        assert redis.Redis(host, int(port), socket_timeout=1).ping()
    assert [nodes.ordinal(a) for a in addresses] == [0, 1, 2, 3]
    with pytest.raises(PlatformError, match="highest ordinals"):
        nodes.remove_nodes([addresses[1]])
    assert nodes.replicas() == 4  # refused before anything changed
    claims_before = {c["metadata"]["name"] for c in k8s_api.list("v1/persistentvolumeclaims", NS)}
    nodes.remove_nodes(addresses[2:])
    assert nodes.replicas() == 2 and [n.ordinal for n in nodes.pods()] == [0, 1]
    claims = {c["metadata"]["name"] for c in k8s_api.list("v1/persistentvolumeclaims", NS)}
    assert claims == claims_before - {"data-cache-2", "data-cache-3"}


def test_api_faults_retry_then_hold(api: KubeApi, k8s_api: KubeAPI) -> None:
    k8s_api.create("apps/v1/deployments", {**worker_deployment("jobs"), "metadata": {
        "name": "jobs", "namespace": NS, "labels": {"app": "jobs"}}})  # fmt: skip
    platform = KubernetesPlatform(api, NS)
    k8s_api.fail_next(500, 2, path="/scale")
    assert platform.get_replicas("jobs") == 0  # two 500s absorbed by bounded retries
    k8s_api.fail_next(429, 3, path="/scale", retry_after=0)
    with pytest.raises(KubeApiError, match="429"):
        platform.get_replicas("jobs")
    k8s_api.fail_next(409, 1, verb="PATCH", path="/scale")
    with pytest.raises(Conflict):
        platform.set_replicas("jobs", 1)  # 409 is the caller's: re-read, decide again
    k8s_api.fail_next(403, 1, path="/scale")
    with pytest.raises(KubeApiError, match="RBAC"):
        platform.get_replicas("jobs")
    k8s_api.go_offline()
    try:
        with pytest.raises(KubeApiError, match=r"unreachable|unavailable"):
            platform.set_replicas("jobs", 5)
        assert api.reachable is False
    finally:
        k8s_api.go_online()
    assert platform.get_replicas("jobs") == 0  # nothing was changed by any fault


def test_events_are_deduplicated_trimmed_and_never_raise(api: KubeApi, k8s_api: KubeAPI) -> None:
    events = EventRecorder(api, NS, host="pod-a")
    events.record("StatefulSet", "cache", "ScaledUp", "3 -> 4 shards: utilization 91 %")
    events.record("StatefulSet", "cache", "ScaledUp", "3 -> 4 shards: utilization 91 %")
    events.record("StatefulSet", "cache", "ScaleBlocked", "gate: " + "x" * 5000, warning=True)
    stored = {e["reason"]: e for e in k8s_api.list("v1/events", NS)}
    assert stored["ScaledUp"]["count"] == 2
    assert stored["ScaledUp"]["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "cache",
        "namespace": NS,
    }
    assert stored["ScaleBlocked"]["type"] == "Warning"
    assert len(stored["ScaleBlocked"]["message"].encode()) <= 1024
    k8s_api.go_offline()
    try:
        events.record("StatefulSet", "cache", "ScaledDown", "4 -> 3")  # no exception
    finally:
        k8s_api.go_online()
    assert events.failures == 1


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_intent_record_lives_in_an_annotation_on_the_statefulset(
    api: KubeApi, k8s_api: KubeAPI
) -> None:
    body = redis_statefulset("cache")
    body["metadata"]["namespace"] = NS
    k8s_api.create("apps/v1/statefulsets", body)
    store = IntentAnnotation(api, NS, "cache")
    assert store.load() == IntentRecord()
    change = PendingChange("scale_in", 4, 3, 1_790_000_000.0, ("10.0.0.7:6379",))
    record = IntentRecord(last_up_at=1_789_999_000.0, change=change, holder="pod-a")
    store.save(record)
    assert IntentAnnotation(api, NS, "cache").load() == record  # another process reads it
    stored = k8s_api.get("apps/v1/statefulsets", NS, "cache")
    assert stored is not None and INTENT_ANNOTATION in stored["metadata"]["annotations"]
    assert stored["spec"]["replicas"] == 0  # the spec is untouched
    k8s_api.patch("apps/v1/statefulsets", NS, "cache",
                  {"metadata": {"annotations": {INTENT_ANNOTATION: "{not json"}}})  # fmt: skip
    with pytest.raises(IntentError, match=INTENT_ANNOTATION):
        store.load()


def test_an_open_breaker_lets_a_trial_call_through_after_its_reset_timeout(
    k8s_api: KubeAPI,
) -> None:
    """Unreachable long enough to open the breaker; once the API is back and the reset
    timeout has passed, the next call goes through and closes it (it used to stay open
    for good, holding every target forever)."""
    k8s_api.create("apps/v1/deployments", {**worker_deployment("jobs"), "metadata": {
        "name": "jobs", "namespace": NS, "labels": {"app": "jobs"}}})  # fmt: skip
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=0.5)
    with k8s_api.client() as api_client:
        api = KubeApi(api_client, attempts=1, request_timeout=1, breaker=breaker)
        platform = KubernetesPlatform(api, NS)
        k8s_api.go_offline()
        try:
            for _ in range(3):
                with pytest.raises(KubeApiError):
                    platform.get_replicas("jobs")
            assert breaker.current_state == pybreaker.STATE_OPEN
            with pytest.raises(KubeApiError, match="circuit open"):
                platform.get_replicas("jobs")
        finally:
            k8s_api.go_online()
        time.sleep(0.6)
        assert platform.get_replicas("jobs") == 0 and api.reachable
        assert breaker.current_state == pybreaker.STATE_CLOSED
        k8s_api.fail_next(404, 3, path="/scale")  # answers, not outages: never trip it
        for _ in range(3):
            with pytest.raises(KubeApiError):
                platform.get_replicas("jobs")
        assert breaker.current_state == pybreaker.STATE_CLOSED


def test_a_refused_consumer_change_is_in_the_status_and_an_event(
    api: KubeApi, k8s_api: KubeAPI
) -> None:
    """The HPA's Deployment: the leader does not scale it, its decision names the HPA in
    the status (blocked by "platform") and a ScaleBlocked Event says so."""
    k8s_api.create("apps/v1/deployments", {**worker_deployment("jobs"), "metadata": {
        "name": "jobs", "namespace": NS, "labels": {"app": "jobs"}}})  # fmt: skip
    k8s_api.create("autoscaling/v2/horizontalpodautoscalers", {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "jobs-hpa", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "jobs"}, "minReplicas": 1, "maxReplicas": 5},
    })  # fmt: skip
    posted: list[tuple[str, str, str, bool]] = []
    with LocalCluster(1, 0) as cluster:
        redis.RedisCluster.from_url(f"redis://{cluster.seed}").rpush("q", *range(30))
        cfg = SlotpilotConfig.model_validate({
            "cluster": {"seeds": [cluster.seed]},
            "shards": {"min_shards": 1, "capacity": {"cpu_cores": None}},
            "consumers": [{"name": "jobs", "source": {"type": "redis_list", "key": "q"},
                           "target_backlog_per_replica": 10, "max_replicas": 5}],
        })  # fmt: skip
        controller = Controller(cfg, KubernetesPlatform(api, NS),
                                events=lambda *event: posted.append(event))  # fmt: skip
        try:
            controller.probe_once()
            [decision] = [d for d in controller.reconcile_once() if d.target == "jobs"]
        finally:
            controller.stop()
    assert decision.desired == 3 and "platform" in decision.blocked_by
    assert "HorizontalPodAutoscaler jobs-hpa" in decision.reason
    assert KubernetesPlatform(api, NS).get_replicas("jobs") == 0
    blocked = [e for e in posted if e[1] == "ScaleBlocked"]
    assert blocked and blocked[0][0] == "jobs" and "jobs-hpa" in blocked[0][2], posted
