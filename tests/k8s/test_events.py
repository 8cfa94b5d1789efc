"""Events against the emulated API over HTTP: what ``kubectl describe`` needs (the
object's uid), what happens after the API server has let an Event expire, and who posts
(the leader only)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from controller.config import SlotpilotConfig
from controller.platform.kubernetes import EventRecorder, KubeApi
from controller.runner import assemble
from tests.k8s.emulator import KubeAPI
from tests.k8s.test_kubelet import redis_statefulset, worker_deployment

NS = "default"


@pytest.fixture
def api(k8s_api: KubeAPI) -> Iterator[KubeApi]:
    with k8s_api.client() as api_client:
        yield KubeApi(api_client, backoff_base=0.01, backoff_cap=0.05, request_timeout=3)


def workloads(k8s_api: KubeAPI) -> dict[str, str]:
    """StatefulSet "cache" and Deployment "worker"; their uids by kind."""
    sts = redis_statefulset("cache")
    sts["metadata"]["namespace"] = NS
    created = k8s_api.create("apps/v1/statefulsets", sts)
    deployment = k8s_api.create("apps/v1/deployments", {**worker_deployment("worker"),
        "metadata": {"name": "worker", "namespace": NS, "labels": {"app": "worker"}}})  # fmt: skip
    return {"StatefulSet": created["metadata"]["uid"], "Deployment": deployment["metadata"]["uid"]}


def test_events_name_their_objects_uid(api: KubeApi, k8s_api: KubeAPI) -> None:
    """``kubectl describe`` lists an object's Events by involvedObject.uid."""
    uids = workloads(k8s_api)
    events = EventRecorder(api, NS, host="pod-a")
    events.record("StatefulSet", "cache", "ScaledUp", "3 -> 4")
    events.record("Deployment", "worker", "ScaledUp", "0 -> 2")
    stored = {e["involvedObject"]["kind"]: e for e in k8s_api.list("v1/events", NS)}
    for kind, uid in uids.items():
        assert stored[kind]["involvedObject"]["uid"] == uid, stored[kind]
    events.record("Deployment", "gone", "ScaledUp", "1 -> 2")  # unreadable: posted all the same
    assert any(e["involvedObject"]["name"] == "gone" for e in k8s_api.list("v1/events", NS))
    assert events.failures == 0


def test_a_repeat_after_the_event_expired_is_a_new_event(api: KubeApi, k8s_api: KubeAPI) -> None:
    workloads(k8s_api)
    k8s_api.set_event_ttl(0.5)
    events = EventRecorder(api, NS, host="pod-a")
    events.record("StatefulSet", "cache", "ScaleBlocked", "gate: cluster_state fail", warning=True)
    events.record("StatefulSet", "cache", "ScaleBlocked", "gate: cluster_state fail", warning=True)
    [first] = k8s_api.list("v1/events", NS)
    assert first["count"] == 2
    time.sleep(0.6)
    assert k8s_api.list("v1/events", NS) == []  # expired, as the API server's --event-ttl
    for _ in range(2):
        events.record("StatefulSet", "cache", "ScaleBlocked", "gate: cluster_state fail",
                      warning=True)  # fmt: skip
    [again] = k8s_api.list("v1/events", NS)
    assert again["metadata"]["name"] != first["metadata"]["name"] and again["count"] == 2
    assert events.failures == 0
    patches = [r.status for r in k8s_api.requests("PATCH", "/events/")]
    assert patches.count(404) == 1, patches  # one 404, then a new Event: not a 404 forever


def test_a_follower_posts_no_events(k8s_api: KubeAPI) -> None:
    workloads(k8s_api)
    cfg = SlotpilotConfig.model_validate({
        "cluster": {"seeds": ["127.0.0.1:1"]},
        "shards": {"platform": "kubernetes"},
        "kubernetes": {"namespace": NS, "statefulset": "cache", "lease_seconds": 3,
                       "renew_deadline_seconds": 2, "retry_seconds": 0.5},
    })  # fmt: skip
    parts = assemble(cfg, lambda: None, api_host=k8s_api.url)
    assert parts.events is not None and parts.leader is not None
    try:
        k8s_api.create("coordination.k8s.io/v1/leases", {
            "metadata": {"name": "slotpilot", "namespace": NS},
            "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3},
        })  # fmt: skip
        parts.start()  # follows: the Lease is someone else's
        assert not parts.leader()
        parts.events("shards", "NodeDown", "127.0.0.1:7001 is down", True)
        parts.events("worker", "ScaleBlocked", "wants 0 -> 2, blocked by lease", True)
        assert k8s_api.list("v1/events", NS) == []
        assert not k8s_api.requests("POST", "/events")
    finally:
        parts.close()
