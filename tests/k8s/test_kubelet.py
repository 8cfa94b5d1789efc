"""The kubelet fixture: replica counts set through the official client become real processes."""

from __future__ import annotations

import itertools
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kubernetes import client
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.k8s.emulator import KubeAPI
from tests.k8s.kubelet import Kubelet, Member

__all__: list[str] = []

NS = "default"
pytestmark = pytest.mark.integration


def redis_statefulset(name: str = "shards", claims: bool = False, **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0, "serviceName": name, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "valkey", "image": "valkey",
                "ports": [{"name": "redis", "containerPort": 6379},
                          {"name": "bus", "containerPort": 16379}],
            }]}},
            **spec,
        },
    }  # fmt: skip
    if claims:
        body["spec"]["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ]
    return body


def worker_deployment(name: str = "consumer") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "worker", "image": "local",
                                "env": [{"name": "QUEUE", "value": "jobs"}]}]}},
        },
    }  # fmt: skip


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def answers(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
                         retry=Retry(NoBackoff(), 0)) as conn:  # fmt: skip
            return bool(conn.ping())
    except (redis.RedisError, OSError):
        return False


def redis_port(pod: Any) -> int:
    ports = [p for c in pod.spec.containers for p in c.ports or [] if p.name == "redis"]
    assert len(ports) == 1
    return int(ports[0].container_port)


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_statefulset_scales_0_3_1_with_real_servers(k8s_api: KubeAPI, kubelet: Kubelet) -> None:
    with k8s_api.client() as api_client:
        apps: Any = client.AppsV1Api(api_client)
        core: Any = client.CoreV1Api(api_client)
        apps.create_namespaced_stateful_set(NS, redis_statefulset())
        selector = apps.read_namespaced_stateful_set_scale("shards", NS).status.selector

        apps.patch_namespaced_stateful_set_scale("shards", NS, {"spec": {"replicas": 3}})
        kubelet.wait_ready("shards", 3)

        def api_pods() -> list[client.V1Pod]:
            return list(core.list_namespaced_pod(NS, label_selector=selector).items)

        wait_until(lambda: len(api_pods()) == 3 and all(ready(p) for p in api_pods()),
                   "3 Ready pods in the API")  # fmt: skip
        pods = sorted(core.list_namespaced_pod(NS, label_selector=selector).items,
                      key=lambda p: p.metadata.name)  # fmt: skip
        assert [p.metadata.name for p in pods] == ["shards-0", "shards-1", "shards-2"]
        ports = [redis_port(p) for p in pods]
        assert len(set(ports)) == 3
        for pod, port in zip(pods, ports, strict=True):
            assert pod.status.pod_ip == "127.0.0.1"
            assert pod.metadata.labels["app"] == "shards"
            assert pod.metadata.owner_references[0].kind == "StatefulSet"
            assert answers(port)
            with redis.Redis(port=port, decode_responses=True) as conn:
                assert conn.info("cluster")["cluster_enabled"] == 1
        wait_until(lambda: (apps.read_namespaced_stateful_set("shards", NS).status.ready_replicas
                            == 3), "status.readyReplicas 3")  # fmt: skip

        apps.patch_namespaced_stateful_set_scale("shards", NS, {"spec": {"replicas": 1}})
        kubelet.wait_ready("shards", 1)
        left = core.list_namespaced_pod(NS, label_selector=selector).items
        assert [p.metadata.name for p in left] == ["shards-0"]  # highest ordinals went first
        assert redis_port(left[0]) == ports[0] and answers(ports[0])
        wait_until(lambda: not answers(ports[1]) and not answers(ports[2]), "servers 1, 2 stopped")
        scale = apps.read_namespaced_stateful_set_scale("shards", NS)
        wait_until(lambda: (apps.read_namespaced_stateful_set_scale("shards", NS).status.replicas
                            == 1), "scale status.replicas 1")  # fmt: skip
        assert scale.spec.replicas == 1
    assert kubelet.errors == []


def test_ordered_ready_statefulset_starts_ordinals_one_by_one(
    k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    body = redis_statefulset("ordered", replicas=0)
    del body["spec"]["podManagementPolicy"]
    with k8s_api.client() as api_client:
        apps: Any = client.AppsV1Api(api_client)
        apps.create_namespaced_stateful_set(NS, body)
        apps.patch_namespaced_stateful_set_scale("ordered", NS, {"spec": {"replicas": 3}})
        members = kubelet.wait_ready("ordered", 3)
    assert [m.ordinal for m in members] == [0, 1, 2]
    for lower, higher in itertools.pairwise(members):
        assert lower.ready_at is not None and higher.created >= lower.ready_at


def test_deployment_scales_0_2_0_with_worker_processes(
    k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet]
) -> None:
    command = [
        sys.executable,
        "-c",
        "import os, time; print(os.environ['QUEUE'], flush=True); time.sleep(60)",
    ]
    kubelet = make_kubelet(worker_command=command)
    with k8s_api.client() as api_client:
        apps: Any = client.AppsV1Api(api_client)
        core: Any = client.CoreV1Api(api_client)
        apps.create_namespaced_deployment(NS, worker_deployment())
        apps.patch_namespaced_deployment_scale("consumer", NS, {"spec": {"replicas": 2}})
        members = kubelet.wait_ready("consumer", 2)
        workers = [m.worker for m in members]
        assert all(w is not None and w.poll() is None for w in workers)
        pods = core.list_namespaced_pod(NS, label_selector="app=consumer").items
        assert sorted(p.metadata.name for p in pods) == sorted(m.pod for m in members)
        assert all(p.metadata.name.startswith("consumer-") for p in pods)
        wait_until(lambda: all(ready(p) for p in core.list_namespaced_pod(
            NS, label_selector="app=consumer").items), "worker pods Ready")  # fmt: skip
        wait_until(lambda: all((m.data_dir / "worker.log").read_text().strip() == "jobs"
                               for m in members), "the workers saw their env")  # fmt: skip

        apps.patch_namespaced_deployment_scale("consumer", NS, {"spec": {"replicas": 0}})
        kubelet.wait_ready("consumer", 0)
        assert core.list_namespaced_pod(NS, label_selector="app=consumer").items == []
        assert all(w is not None and w.poll() is not None for w in workers)
    assert kubelet.errors == []


def test_deployment_scale_down_honours_pod_deletion_cost(
    k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet]
) -> None:
    kubelet = make_kubelet(worker_command=[sys.executable, "-c", "import time; time.sleep(60)"])
    with k8s_api.client() as api_client:
        apps: Any = client.AppsV1Api(api_client)
        core: Any = client.CoreV1Api(api_client)
        apps.create_namespaced_deployment(NS, worker_deployment())
        apps.patch_namespaced_deployment_scale("consumer", NS, {"spec": {"replicas": 3}})
        members = kubelet.wait_ready("consumer", 3)
        busiest = members[1].pod
        for cost, member in zip([-5, 100, 0], members, strict=True):
            annotation = {"controller.kubernetes.io/pod-deletion-cost": str(cost)}
            core.patch_namespaced_pod(member.pod, NS, {"metadata": {"annotations": annotation}})
        apps.patch_namespaced_deployment_scale("consumer", NS, {"spec": {"replicas": 1}})
        assert [m.pod for m in kubelet.wait_ready("consumer", 1)] == [busiest]


def test_reschedule_moves_a_pod_to_a_new_port_with_an_empty_dir(
    k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    with k8s_api.client() as api_client:
        apps: Any = client.AppsV1Api(api_client)
        core: Any = client.CoreV1Api(api_client)
        apps.create_namespaced_stateful_set(NS, redis_statefulset(replicas=2))
        kubelet.wait_ready("shards", 2)
        before = core.read_namespaced_pod("shards-1", NS)
        old: Member = kubelet.member("shards-1")
        with redis.Redis(port=old.port, decode_responses=True) as conn:
            old_id = conn.execute_command("CLUSTER", "MYID")

        moved = kubelet.reschedule("shards-1")
        assert moved.port != old.port and moved.data_dir != old.data_dir
        assert not old.data_dir.exists()
        kubelet.wait_ready("shards", 2)
        after = core.read_namespaced_pod("shards-1", NS)
        assert after.metadata.uid != before.metadata.uid
        assert redis_port(after) == moved.port
        wait_until(lambda: ready(core.read_namespaced_pod("shards-1", NS)), "rescheduled pod Ready")
        assert not answers(old.port)
        with redis.Redis(port=moved.port, decode_responses=True) as conn:
            assert conn.execute_command("CLUSTER", "MYID") != old_id  # a fresh node
            assert conn.dbsize() == 0


def test_a_crashed_server_restarts_in_place(k8s_api: KubeAPI, kubelet: Kubelet) -> None:
    with k8s_api.client() as api_client:
        apps: Any = client.AppsV1Api(api_client)
        core: Any = client.CoreV1Api(api_client)
        apps.create_namespaced_stateful_set(NS, redis_statefulset(replicas=1))
        member = kubelet.wait_ready("shards", 1)[0]
        uid = core.read_namespaced_pod("shards-0", NS).metadata.uid
        kubelet.crash("shards-0")
        wait_until(lambda: member.restarts == 1 and member.ready, "restart in place")
        pod = core.read_namespaced_pod("shards-0", NS)
        assert pod.metadata.uid == uid and redis_port(pod) == member.port
        wait_until(lambda: core.read_namespaced_pod("shards-0", NS).status.container_statuses[0]
                   .restart_count == 1, "restartCount 1")  # fmt: skip
        assert answers(member.port)


def test_a_pod_deleted_through_the_api_is_recreated_on_a_new_port(
    k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    with k8s_api.client() as api_client:
        apps: Any = client.AppsV1Api(api_client)
        core: Any = client.CoreV1Api(api_client)
        apps.create_namespaced_stateful_set(NS, redis_statefulset(replicas=1))
        old = kubelet.wait_ready("shards", 1)[0]
        core.delete_namespaced_pod("shards-0", NS)
        wait_until(lambda: kubelet.members("shards") != [old]
                   and all(m.ready for m in kubelet.members("shards"))
                   and len(kubelet.members("shards")) == 1, "pod recreated")  # fmt: skip
        new = kubelet.member("shards-0")
        assert new.port != old.port and not answers(old.port) and answers(new.port)


def test_claims_keep_a_scaled_down_ordinal_data_until_the_pvc_is_deleted(
    k8s_api: KubeAPI, kubelet: Kubelet
) -> None:
    with k8s_api.client() as api_client:
        apps: Any = client.AppsV1Api(api_client)
        core: Any = client.CoreV1Api(api_client)
        apps.create_namespaced_stateful_set(NS, redis_statefulset(replicas=2, claims=True))
        first = kubelet.wait_ready("shards", 2)[1]
        with redis.Redis(port=first.port, decode_responses=True) as conn:
            node_id = conn.execute_command("CLUSTER", "MYID")
        claims = core.list_namespaced_persistent_volume_claim(NS).items
        assert sorted(c.metadata.name for c in claims) == ["data-shards-0", "data-shards-1"]

        def cycle_ordinal_1() -> Member:
            apps.patch_namespaced_stateful_set_scale("shards", NS, {"spec": {"replicas": 1}})
            kubelet.wait_ready("shards", 1)
            apps.patch_namespaced_stateful_set_scale("shards", NS, {"spec": {"replicas": 2}})
            return kubelet.wait_ready("shards", 2)[1]

        again = cycle_ordinal_1()
        assert again.data_dir == first.data_dir and again.port != first.port
        with redis.Redis(port=again.port, decode_responses=True) as conn:
            assert conn.execute_command("CLUSTER", "MYID") == node_id  # old nodes.conf back

        apps.patch_namespaced_stateful_set_scale("shards", NS, {"spec": {"replicas": 1}})
        kubelet.wait_ready("shards", 1)
        core.delete_namespaced_persistent_volume_claim("data-shards-1", NS)
        apps.patch_namespaced_stateful_set_scale("shards", NS, {"spec": {"replicas": 2}})
        fresh = kubelet.wait_ready("shards", 2)[1]
        assert fresh.data_dir != first.data_dir
        with redis.Redis(port=fresh.port, decode_responses=True) as conn:
            assert conn.execute_command("CLUSTER", "MYID") != node_id


def test_everything_started_is_stopped(
    k8s_api: KubeAPI, make_kubelet: Callable[..., Kubelet]
) -> None:
    kubelet = make_kubelet(worker_command=[sys.executable, "-c", "import time; time.sleep(60)"])
    k8s_api.create("apps/v1/statefulsets", dict(redis_statefulset(replicas=2), metadata={
        "name": "shards", "namespace": NS, "labels": {"app": "shards"}}))  # fmt: skip
    body = worker_deployment()
    body["spec"]["replicas"] = 1
    body["metadata"]["namespace"] = NS
    k8s_api.create("apps/v1/deployments", body)
    members = kubelet.wait_ready("shards", 2) + kubelet.wait_ready("consumer", 1)
    kubelet.stop()
    assert not any(m.running() for m in members)
    assert not any(answers(m.port) for m in members if m.server is not None)


def test_a_hung_server_turns_not_ready_and_back(k8s_api: KubeAPI, kubelet: Kubelet) -> None:
    k8s_api.create("apps/v1/statefulsets", dict(redis_statefulset(replicas=1), metadata={
        "name": "shards", "namespace": NS, "labels": {"app": "shards"}}))  # fmt: skip
    member = kubelet.wait_ready("shards", 1)[0]
    assert member.server is not None

    def pod_ready() -> bool:
        stored = k8s_api.get("v1/pods", NS, "shards-0") or {}
        conditions = (stored.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    member.server.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: not pod_ready(), "the hung pod not Ready")
        assert member.running() and member.restarts == 0  # hung, not dead: no restart
    finally:
        member.server.signal(signal.SIGCONT)
    wait_until(pod_ready, "the pod Ready again")
