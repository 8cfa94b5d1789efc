"""The API emulator against what the Kubernetes API documents, through the official client.

References: API concepts (resourceVersion, 409 Conflict, patch types, watch), the
``autoscaling/v1`` Scale subresource, label selectors, and the Status kind for errors.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.k8s.api_rules import match_labels, merge_patch, strategic_merge_patch
from tests.k8s.emulator import Kind, KubeAPI

__all__: list[str] = []

NS = "default"


def statefulset(name: str = "redis", replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas, "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "redis", "image": "valkey",
                 "ports": [{"name": "redis", "containerPort": 6379}]},
                {"name": "exporter", "image": "exporter"},
            ]}},
        },
    }  # fmt: skip


def deployment(name: str = "worker", replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "w", "image": "worker"}]}},
        },
    }  # fmt: skip


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }  # fmt: skip


def model_of(value: Any) -> type:
    """The client's model class of a value (without narrowing its type for mypy)."""
    return type(value)


@pytest.fixture
def api_client(k8s_api: KubeAPI) -> Iterator[client.ApiClient]:
    with k8s_api.client() as api_client:
        yield api_client


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


# --- pure helpers --------------------------------------------------------------------


def test_label_selector_syntax() -> None:
    labels = {"app": "redis", "role": "primary", "tier": "cache"}
    assert match_labels(labels, "app=redis")
    assert match_labels(labels, "app==redis,role=primary")
    assert not match_labels(labels, "app=redis,role=replica")
    assert match_labels(labels, "role!=replica")
    assert not match_labels(labels, "role!=primary")
    assert match_labels(labels, "tier in (cache, db),app")
    assert not match_labels(labels, "tier notin (cache)")
    assert match_labels(labels, "!zone")
    assert not match_labels(labels, "!app")
    assert not match_labels(labels, "zone")
    assert match_labels({}, "zone!=a")  # a missing key satisfies != (as in Kubernetes)


def test_merge_patch_is_rfc7386_and_strategic_merges_named_lists() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3], "x": None}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }
    containers = {"c": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}
    patched = strategic_merge_patch(containers, {"c": [{"name": "b", "image": "2"}]})
    assert patched == {"c": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}
    assert merge_patch(containers, {"c": [{"name": "b", "image": "2"}]}) == {
        "c": [{"name": "b", "image": "2"}]
    }


# --- objects, resourceVersion, conflicts -------------------------------------------------


def test_create_fills_server_fields_and_a_second_create_conflicts(apps: Any) -> None:
    created = apps.create_namespaced_stateful_set(NS, statefulset())
    assert created.metadata.namespace == NS
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    with pytest.raises(ApiException) as error:
        apps.create_namespaced_stateful_set(NS, statefulset())
    assert error.value.status == 409
    assert '"reason":"AlreadyExists"' in str(error.value.body).replace(" ", "")


def test_missing_object_is_404(apps: Any, core: Any) -> None:
    with pytest.raises(ApiException) as error:
        apps.read_namespaced_stateful_set("nope", NS)
    assert error.value.status == 404
    with pytest.raises(ApiException) as error:
        core.delete_namespaced_pod("nope", NS)
    assert error.value.status == 404


def test_every_write_bumps_resource_version_and_stale_replace_is_409(
    apps: Any,
) -> None:
    first = apps.create_namespaced_stateful_set(NS, statefulset())
    patched = apps.patch_namespaced_stateful_set(
        "redis", NS, {"metadata": {"annotations": {"a": "1"}}}
    )
    assert int(patched.metadata.resource_version) > int(first.metadata.resource_version)
    assert patched.metadata.annotations == {"a": "1"}

    stale = first
    stale.spec.replicas = 7
    with pytest.raises(ApiException) as error:
        apps.replace_namespaced_stateful_set("redis", NS, stale)
    assert error.value.status == 409
    assert apps.read_namespaced_stateful_set("redis", NS).spec.replicas == 1

    fresh = apps.read_namespaced_stateful_set("redis", NS)
    fresh.spec.replicas = 7
    replaced = apps.replace_namespaced_stateful_set("redis", NS, fresh)
    assert replaced.spec.replicas == 7
    assert replaced.metadata.uid == first.metadata.uid
    assert int(replaced.metadata.resource_version) > int(fresh.metadata.resource_version)


def test_patch_carrying_a_stale_resource_version_is_409(apps: Any) -> None:
    first = apps.create_namespaced_stateful_set(NS, statefulset())
    apps.patch_namespaced_stateful_set("redis", NS, {"spec": {"replicas": 2}})
    body = {
        "metadata": {"resourceVersion": first.metadata.resource_version},
        "spec": {"replicas": 3},
    }
    with pytest.raises(ApiException) as error:
        apps.patch_namespaced_stateful_set("redis", NS, body)
    assert error.value.status == 409
    assert apps.read_namespaced_stateful_set("redis", NS).spec.replicas == 2


def test_patch_types(apps: Any) -> None:
    apps.create_namespaced_stateful_set(NS, statefulset())
    image_patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "redis", "image": "v2"}]}}}
    }
    strategic = apps.patch_namespaced_stateful_set("redis", NS, image_patch)
    containers = {c.name: c.image for c in strategic.spec.template.spec.containers}
    assert containers == {"redis": "v2", "exporter": "exporter"}

    merged = apps.patch_namespaced_stateful_set(
        "redis", NS, image_patch, _content_type="application/merge-patch+json"
    )
    assert [c.name for c in merged.spec.template.spec.containers] == ["redis"]

    version = merged.metadata.resource_version
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
    ]
    assert apps.patch_namespaced_stateful_set("redis", NS, ops).spec.replicas == 4
    with pytest.raises(ApiException) as error:
        apps.patch_namespaced_stateful_set("redis", NS, ops)  # the test op now fails
    assert error.value.status == 422


def test_status_subresource_and_main_resource_do_not_overwrite_each_other(
    apps: Any,
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    apps.patch_namespaced_deployment_status(
        "worker", NS, {"status": {"replicas": 1}, "spec": {"replicas": 9}}
    )
    read = apps.read_namespaced_deployment("worker", NS)
    assert (read.spec.replicas, read.status.replicas) == (1, 1)
    apps.patch_namespaced_deployment(
        "worker", NS, {"spec": {"replicas": 2}, "status": {"replicas": 5}}
    )
    read = apps.read_namespaced_deployment("worker", NS)
    assert (read.spec.replicas, read.status.replicas) == (2, 1)
    assert read.metadata.generation == 2  # spec changed once


# --- the scale subresource ---------------------------------------------------------------


def test_statefulset_scale_subresource(apps: Any) -> None:
    apps.create_namespaced_stateful_set(NS, statefulset(replicas=1))
    scale = apps.read_namespaced_stateful_set_scale("redis", NS)
    assert model_of(scale) is client.V1Scale
    assert (scale.api_version, scale.kind) == ("autoscaling/v1", "Scale")
    assert scale.spec.replicas == 1
    assert scale.status.selector == "app=redis"

    patched = apps.patch_namespaced_stateful_set_scale("redis", NS, {"spec": {"replicas": 3}})
    assert model_of(patched) is client.V1Scale and patched.spec.replicas == 3
    sts = apps.read_namespaced_stateful_set("redis", NS)
    assert sts.spec.replicas == 3
    assert [c.name for c in sts.spec.template.spec.containers] == ["redis", "exporter"]

    merge = apps.patch_namespaced_stateful_set_scale(
        "redis", NS, {"spec": {"replicas": 2}}, _content_type="application/merge-patch+json"
    )
    assert merge.spec.replicas == 2


def test_scale_put_checks_resource_version(apps: Any) -> None:
    apps.create_namespaced_deployment(NS, deployment(replicas=2))
    scale = apps.read_namespaced_deployment_scale("worker", NS)
    scale.spec.replicas = 5
    assert apps.replace_namespaced_deployment_scale("worker", NS, scale).spec.replicas == 5
    assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 5
    scale.spec.replicas = 1  # carries the resourceVersion read before the replace
    with pytest.raises(ApiException) as error:
        apps.replace_namespaced_deployment_scale("worker", NS, scale)
    assert error.value.status == 409
    assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 5


# --- leases, pods, events, PVCs, HPAs ----------------------------------------------------


def test_lease_create_read_replace_and_only_one_of_two_racers_wins(
    api_client: client.ApiClient,
) -> None:
    leases: Any = client.CoordinationV1Api(api_client)
    body = client.V1Lease(
        metadata=client.V1ObjectMeta(name="slotpilot"),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15),
    )
    leases.create_namespaced_lease(NS, body)
    read_a = leases.read_namespaced_lease("slotpilot", NS)
    read_b = leases.read_namespaced_lease("slotpilot", NS)
    assert read_a.spec.holder_identity == "a"

    read_a.spec.holder_identity = "a"
    read_b.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("slotpilot", NS, read_a)
    assert renewed.spec.holder_identity == "a"
    with pytest.raises(ApiException) as error:
        leases.replace_namespaced_lease("slotpilot", NS, read_b)
    assert error.value.status == 409
    assert leases.read_namespaced_lease("slotpilot", NS).spec.holder_identity == "a"

    released = leases.patch_namespaced_lease("slotpilot", NS, {"spec": {"holderIdentity": None}})
    assert released.spec.holder_identity is None


def test_delete_preconditions_and_dry_run(api_client: client.ApiClient) -> None:
    leases: Any = client.CoordinationV1Api(api_client)
    body = {"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}
    first = leases.create_namespaced_lease(NS, body)
    leases.patch_namespaced_lease("l", NS, {"spec": {"holderIdentity": "b"}})
    stale = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(resource_version=first.metadata.resource_version)
    )
    with pytest.raises(ApiException) as error:
        leases.delete_namespaced_lease("l", NS, body=stale)
    assert error.value.status == 409
    with pytest.raises(ApiException) as error:
        leases.patch_namespaced_lease("l", NS, {"spec": {"holderIdentity": "c"}}, dry_run="All")
    assert error.value.status == 400
    assert leases.read_namespaced_lease("l", NS).spec.holder_identity == "b"
    fresh = leases.read_namespaced_lease("l", NS).metadata.resource_version
    current = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=fresh))
    leases.delete_namespaced_lease("l", NS, body=current)
    assert leases.list_namespaced_lease(NS).items == []


def test_pods_list_filters_by_label_selector(core: Any) -> None:
    core.create_namespaced_pod(NS, pod("redis-0", {"app": "redis", "role": "primary"}))
    core.create_namespaced_pod(NS, pod("redis-1", {"app": "redis", "role": "replica"}))
    core.create_namespaced_pod(NS, pod("worker-x", {"app": "worker"}))
    core.create_namespaced_pod("other", pod("redis-0", {"app": "redis", "role": "primary"}))

    def names(selector: str, namespace: str = NS) -> list[str]:
        found = core.list_namespaced_pod(namespace, label_selector=selector).items
        return sorted(p.metadata.name for p in found)

    assert names("app=redis") == ["redis-0", "redis-1"]
    assert names("app=redis,role!=replica") == ["redis-0"]
    assert names("app in (worker,nothing)") == ["worker-x"]
    assert names("") == ["redis-0", "redis-1", "worker-x"]
    assert names("app=redis", "other") == ["redis-0"]
    everywhere = core.list_pod_for_all_namespaces(label_selector="role=primary").items
    assert sorted(p.metadata.namespace for p in everywhere) == [NS, "other"]
    by_field = core.list_namespaced_pod(NS, field_selector="metadata.name=redis-1").items
    assert [p.metadata.name for p in by_field] == ["redis-1"]

    core.delete_namespaced_pod("redis-1", NS)
    assert names("app=redis") == ["redis-0"]


def test_events_create_patch_list(core: Any) -> None:
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="redis."),
        involved_object=client.V1ObjectReference(kind="StatefulSet", name="redis", namespace=NS),
        reason="ScaledUp", message="3 -> 5 shards", type="Normal", count=1,
    )  # fmt: skip
    created = core.create_namespaced_event(NS, event)
    assert created.metadata.name.startswith("redis.")
    core.patch_namespaced_event(created.metadata.name, NS, {"count": 2, "message": "again"})
    listed = core.list_namespaced_event(NS, field_selector="involvedObject.name=redis").items
    assert [(e.reason, e.count, e.message) for e in listed] == [("ScaledUp", 2, "again")]
    assert core.list_namespaced_event(NS, field_selector="involvedObject.name=other").items == []


def test_pvcs_list_delete_and_hpas_list(k8s_api: KubeAPI, api_client: client.ApiClient) -> None:
    core: Any = client.CoreV1Api(api_client)
    for ordinal in range(2):
        claim = client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=f"data-redis-{ordinal}", labels={"app": "redis"}),
            spec=client.V1PersistentVolumeClaimSpec(access_modes=["ReadWriteOnce"]),
        )
        core.create_namespaced_persistent_volume_claim(NS, claim)
    core.delete_namespaced_persistent_volume_claim("data-redis-1", NS)
    claims = core.list_namespaced_persistent_volume_claim(NS, label_selector="app=redis").items
    assert [c.metadata.name for c in claims] == ["data-redis-0"]

    hpas: Any = client.AutoscalingV2Api(api_client)
    assert hpas.list_namespaced_horizontal_pod_autoscaler(NS).items == []
    k8s_api.create("autoscaling/v2/horizontalpodautoscalers", {
        "metadata": {"name": "worker", "namespace": NS},
        "spec": {"minReplicas": 1, "maxReplicas": 3, "scaleTargetRef": {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}},
    })  # fmt: skip
    listed = hpas.list_namespaced_horizontal_pod_autoscaler(NS).items
    assert [h.spec.scale_target_ref.name for h in listed] == ["worker"]


def test_discovery_lists_the_scale_subresource(apps: Any) -> None:
    names = {r.name for r in apps.get_api_resources().resources}
    assert {"statefulsets", "statefulsets/scale", "deployments/scale"} <= names


def test_watch_streams_matching_events_then_ends_on_timeout(core: Any, k8s_api: KubeAPI) -> None:
    core.create_namespaced_pod(NS, pod("redis-0", {"app": "redis"}))
    core.create_namespaced_pod(NS, pod("worker-x", {"app": "worker"}))

    def later() -> None:
        k8s_api.patch("v1/pods", NS, "redis-0", {"metadata": {"annotations": {"seen": "yes"}}})
        k8s_api.patch("v1/pods", NS, "worker-x", {"metadata": {"annotations": {"seen": "yes"}}})
        k8s_api.patch("v1/pods", NS, "worker-x", {"metadata": {"labels": {"app": "redis"}}})
        k8s_api.patch("v1/pods", NS, "redis-0", {"metadata": {"labels": {"app": "old"}}})
        k8s_api.delete("v1/pods", NS, "worker-x")
        k8s_api.delete("v1/pods", NS, "redis-0")

    timer = threading.Timer(0.3, later)
    timer.start()
    events = []
    try:
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod, NS, label_selector="app=redis", timeout_seconds=2
        )
        for event in stream:
            events.append((event["type"], event["object"].metadata.name))
    finally:
        timer.join(5)
    assert events == [
        ("ADDED", "redis-0"),
        ("MODIFIED", "redis-0"),
        ("ADDED", "worker-x"),  # relabelled into the selection
        ("DELETED", "redis-0"),  # relabelled out of it: its real deletion is not shown
        ("DELETED", "worker-x"),
    ]


def test_watch_from_a_resource_version_skips_what_the_watcher_already_has(
    core: Any, k8s_api: KubeAPI
) -> None:
    core.create_namespaced_pod(NS, pod("old", {"app": "redis"}))
    listed = core.list_namespaced_pod(NS)
    core.create_namespaced_pod(NS, pod("new", {"app": "redis"}))
    stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
        core.list_namespaced_pod,
        NS,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=1,
    )
    assert [(e["type"], e["object"].metadata.name) for e in stream] == [("ADDED", "new")]


# --- fault injection -------------------------------------------------------------------


def test_injected_statuses_surface_as_api_exceptions(k8s_api: KubeAPI, apps: Any) -> None:
    apps.create_namespaced_stateful_set(NS, statefulset())
    throttle = k8s_api.fail_next(429, count=2, verb="PATCH", path="/scale", retry_after=1)
    for _ in range(2):
        with pytest.raises(ApiException) as error:
            apps.patch_namespaced_stateful_set_scale("redis", NS, {"spec": {"replicas": 3}})
        assert error.value.status == 429
        assert (error.value.headers or {})["Retry-After"] == "1"
    assert apps.read_namespaced_stateful_set_scale("redis", NS).spec.replicas == 1  # GET not hit
    assert apps.patch_namespaced_stateful_set_scale("redis", NS, {"spec": {"replicas": 3}})
    assert throttle.hits == 2

    k8s_api.fail_next(500)
    with pytest.raises(ApiException) as error:
        apps.read_namespaced_stateful_set("redis", NS)
    assert error.value.status == 500
    k8s_api.fail_next(409, path="/statefulsets/redis")
    with pytest.raises(ApiException) as error:
        apps.patch_namespaced_stateful_set("redis", NS, {"spec": {"replicas": 4}})
    assert error.value.status == 409
    assert apps.read_namespaced_stateful_set("redis", NS).spec.replicas == 3
    statuses = [r.status for r in k8s_api.requests(path="/statefulsets/redis")]
    assert statuses.count(429) == 2 and 500 in statuses and 409 in statuses


def test_unreachable_api_refuses_connections_until_back(k8s_api: KubeAPI) -> None:
    with k8s_api.client(retries=0) as api_client:
        apps: Any = client.AppsV1Api(api_client)
        apps.create_namespaced_deployment(NS, deployment())
        k8s_api.go_offline()
        assert not k8s_api.online
        with pytest.raises(urllib3.exceptions.HTTPError) as error:
            apps.read_namespaced_deployment("worker", NS)
        assert "refused" in repr(error.value).lower()
        k8s_api.go_online()
        assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 1


def test_a_hung_request_times_out_at_the_client_and_may_still_apply(
    k8s_api: KubeAPI, apps: Any
) -> None:
    apps.create_namespaced_deployment(NS, deployment())
    hang = k8s_api.hang_next(1.0, verb="PATCH")
    with pytest.raises(urllib3.exceptions.HTTPError):
        apps.patch_namespaced_deployment_scale(
            "worker", NS, {"spec": {"replicas": 2}}, _request_timeout=0.2
        )
    assert hang.hits == 1
    deadline = time.monotonic() + 5
    while k8s_api.get("apps/v1/deployments", NS, "worker")["spec"]["replicas"] != 2:  # type: ignore[index]
        assert time.monotonic() < deadline, "the delayed PATCH never landed"
        time.sleep(0.05)


def test_going_offline_ends_open_watches(k8s_api: KubeAPI, core: Any) -> None:
    outcome: list[str] = []

    def watch_pods() -> None:
        try:
            for _ in watch.Watch().stream(  # type: ignore[no-untyped-call]
                core.list_namespaced_pod, NS, timeout_seconds=30
            ):
                pass
            outcome.append("ended")
        except Exception as exc:  # the client may see the cut connection as an error
            outcome.append(type(exc).__name__)

    watcher = threading.Thread(target=watch_pods, daemon=True)
    watcher.start()
    deadline = time.monotonic() + 5
    while not k8s_api.requests(path="/pods"):
        assert time.monotonic() < deadline, "the watch never reached the emulator"
        time.sleep(0.02)
    k8s_api.go_offline()
    watcher.join(10)
    assert not watcher.is_alive() and outcome
    k8s_api.go_online()
    assert core.list_namespaced_pod(NS).items == []


def test_the_client_itself_resends_a_get_answered_429_with_retry_after(
    k8s_api: KubeAPI, apps: Any
) -> None:
    """urllib3 under the official client honours Retry-After for idempotent verbs."""
    apps.create_namespaced_deployment(NS, deployment())
    k8s_api.fail_next(429, verb="GET", path="/deployments/worker", retry_after=1)
    assert apps.read_namespaced_deployment("worker", NS).spec.replicas == 1  # no error raised
    statuses = [r.status for r in k8s_api.requests("GET", "/deployments/worker")]
    assert statuses == [429, 200]
    k8s_api.fail_next(429, verb="PATCH", path="/deployments/worker", retry_after=1)
    with pytest.raises(ApiException) as error:  # PATCH is not re-sent
        apps.patch_namespaced_deployment("worker", NS, {"spec": {"replicas": 2}})
    assert error.value.status == 429


def test_a_declared_custom_resource_is_served_like_the_built_in_ones(
    k8s_api: KubeAPI, api_client: client.ApiClient
) -> None:
    k8s_api.declare(Kind("slotpilot.io", "v1alpha1", "queuescalers", "QueueScaler", True,
                         ("status",)))  # fmt: skip
    custom: Any = client.CustomObjectsApi(api_client)
    args = ("slotpilot.io", "v1alpha1", NS, "queuescalers")
    body = {"apiVersion": "slotpilot.io/v1alpha1", "kind": "QueueScaler",
            "metadata": {"name": "jobs"}, "spec": {"target": "jobs"}}  # fmt: skip
    created = custom.create_namespaced_custom_object(*args, body)
    assert created["metadata"]["uid"] and created["spec"] == {"target": "jobs"}
    custom.patch_namespaced_custom_object_status(*args, "jobs", {"status": {"replicas": 2}})
    listed = custom.list_namespaced_custom_object(*args)["items"]
    assert [(o["metadata"]["name"], o["status"]) for o in listed] == [("jobs", {"replicas": 2})]
    with pytest.raises(ApiException) as error:
        custom.list_namespaced_custom_object("slotpilot.io", "v1alpha1", NS, "undeclared")
    assert error.value.status == 404


def test_a_kubeconfig_for_another_process(k8s_api: KubeAPI, tmp_path: Path) -> None:
    k8s_api.create("v1/configmaps", {"metadata": {"name": "seen", "namespace": "ops"}})
    path = k8s_api.write_kubeconfig(tmp_path / "kubeconfig", namespace="ops")
    script = (
        "from kubernetes import client, config\n"
        f"config.load_kube_config(config_file={str(path)!r})\n"
        f"_, context = config.list_kube_config_contexts(config_file={str(path)!r})\n"
        "namespace = context['context']['namespace']\n"
        "print(client.CoreV1Api().read_namespaced_config_map('seen', namespace).metadata.uid)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == k8s_api.get("v1/configmaps", "ops", "seen")["metadata"]["uid"]  # type: ignore[index]
