"""Lease timing against the emulated API over HTTP: clocks skewed per client, answers
that come late, 409 on a renewal, 429 with ``Retry-After``. The invariant throughout:
never two leaders, and a dead leader is replaced one lease duration after its last
renewal was seen, whatever the clocks say."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pybreaker
import pytest

from controller.platform.kubernetes import KubeApi, KubeApiError, KubernetesPlatform, LeaderElector
from tests.k8s.emulator import KubeAPI
from tests.k8s.test_kubelet import worker_deployment
from tests.k8s.test_platform_kubernetes import FAST, Clock

NS = "default"


@pytest.fixture
def apis(k8s_api: KubeAPI) -> Iterator[dict[str, KubeApi]]:
    """One API client per candidate, each with its own token: "slow" writes times 10 s
    behind, "fast" 10 s ahead, "true" as they are."""
    k8s_api.skew_clock("slow", -10)
    k8s_api.skew_clock("fast", +10)
    clients = {token: k8s_api.client(token=token) for token in ("slow", "fast", "true")}
    try:
        yield {t: KubeApi(c, backoff_base=0.01, backoff_cap=0.05, request_timeout=10)
               for t, c in clients.items()}  # fmt: skip
    finally:
        for api_client in clients.values():
            api_client.close()  # type: ignore[no-untyped-call]


def candidate(api: KubeApi, identity: str, clock: Clock | None = None) -> LeaderElector:
    if clock is None:
        return LeaderElector(api, NS, "slotpilot", identity, FAST)
    return LeaderElector(api, NS, "slotpilot", identity, FAST, clock=clock.monotonic,
                         wall=clock.wall)  # fmt: skip


def test_the_emulator_stores_a_skewed_clients_times_shifted(
    k8s_api: KubeAPI, apis: dict[str, KubeApi]
) -> None:
    clock = Clock()
    assert candidate(apis["fast"], "pod-a", clock).step()
    lease = k8s_api.get("coordination.k8s.io/v1/leases", NS, "slotpilot")
    assert lease is not None
    renewed = datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
    assert renewed == clock.wall() + timedelta(seconds=10)


def test_a_follower_ahead_of_the_leader_never_takes_its_lease(apis: dict[str, KubeApi]) -> None:
    """The leader's clock runs 10 s behind the follower's: its renewTime always looks
    10 s old, more than a lease. The follower used to take the Lease at once."""
    clock = Clock()
    leader, follower = (
        candidate(apis["slow"], "pod-a", clock),
        candidate(apis["true"], "pod-b", clock),
    )
    assert leader.step()
    for _ in range(30):  # 6 s of renewals every retry period: two lease durations
        assert not follower.step() and follower.holder == "pod-a"
        clock.advance(FAST.retry_seconds)
        assert leader.step() and leader.is_leader
        assert not (leader.is_leader and follower.is_leader)


def test_a_dead_leader_ahead_of_the_follower_is_replaced_after_one_lease(
    apis: dict[str, KubeApi],
) -> None:
    """The leader's clock runs 10 s ahead; it dies. The follower takes over one lease
    duration after it last saw a renewal, not 10 s later."""
    clock = Clock()
    leader, follower = (
        candidate(apis["fast"], "pod-a", clock),
        candidate(apis["true"], "pod-b", clock),
    )
    assert leader.step()
    assert not follower.step()
    clock.advance(1)
    assert leader.step()  # its last renewal
    assert not follower.step()  # seen now: a lease duration from here
    waited = 0.0
    while not follower.step():
        assert waited < FAST.lease_seconds, "the follower did not take the dead leader's Lease"
        clock.advance(FAST.retry_seconds)
        waited += FAST.retry_seconds
    assert waited == pytest.approx(FAST.lease_seconds, abs=FAST.retry_seconds + 1e-9)


def test_a_renewal_answered_after_the_renew_deadline_is_not_leadership(
    k8s_api: KubeAPI, apis: dict[str, KubeApi]
) -> None:
    """The API carries the renewal out but answers 3.5 s later (past the 2 s renew
    deadline and the 3 s lease): the follower takes the Lease meanwhile, and the late
    "success" must not make the old leader act again."""
    leader, follower = candidate(apis["true"], "pod-a"), candidate(apis["slow"], "pod-b")
    assert leader.step() and not follower.step()
    k8s_api.answer_late(3.5, verb="PUT", path="/leases/slotpilot")
    renewing = threading.Thread(target=leader.step)
    renewing.start()
    both: list[float] = []
    started = time.monotonic()
    while renewing.is_alive() or time.monotonic() - started < 4.5:
        follower.step()
        if leader.is_leader and follower.is_leader:
            both.append(time.monotonic() - started)
        time.sleep(FAST.retry_seconds / 2)
    renewing.join()
    assert follower.is_leader, "the follower should have taken the unrenewed Lease"
    assert not leader.is_leader
    assert not both, f"two leaders at {both[:3]} s"
    assert leader.step() is False and leader.holder == "pod-b"


def test_a_conflict_on_renewal_ends_leadership_at_once(
    k8s_api: KubeAPI, apis: dict[str, KubeApi]
) -> None:
    clock = Clock()
    leader = candidate(apis["true"], "pod-a", clock)
    assert leader.step()
    clock.advance(FAST.retry_seconds)
    k8s_api.fail_next(409, verb="PUT", path="/leases/slotpilot")
    assert leader.step() is False  # someone else wrote the Lease: not ours any more
    assert not leader.is_leader


def test_429_waits_out_retry_after_and_never_trips_the_breaker(k8s_api: KubeAPI) -> None:
    k8s_api.create("apps/v1/deployments", {**worker_deployment("jobs"), "metadata": {
        "name": "jobs", "namespace": NS, "labels": {"app": "jobs"}}})  # fmt: skip
    slept: list[float] = []
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    with k8s_api.client() as api_client:
        api = KubeApi(api_client, backoff_base=0.01, backoff_cap=0.05, breaker=breaker,
                      sleep=slept.append)  # fmt: skip
        platform = KubernetesPlatform(api, NS)
        k8s_api.fail_next(429, 2, verb="PATCH", path="/scale", retry_after=1.5)
        platform.set_replicas("jobs", 2)  # PATCH: urllib3 does not re-send it by itself
        assert slept == [1.5, 1.5]
        assert platform.get_replicas("jobs") == 2
        for _ in range(3):  # throttled for good: an error, never an open circuit
            k8s_api.fail_next(429, 3, verb="PATCH", path="/scale", retry_after=0)
            with pytest.raises(KubeApiError, match="429"):
                platform.set_replicas("jobs", 3)
        assert breaker.current_state == pybreaker.STATE_CLOSED
        assert api.reachable
        assert platform.get_replicas("jobs") == 2
