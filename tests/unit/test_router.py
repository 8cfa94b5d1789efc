"""Router behaviour: breakers eject and re-admit, update() keeps state, call() fails over."""

from __future__ import annotations

import time
from collections import Counter

import pybreaker
import pytest

from balancer import BreakerPolicy, Endpoint, NoHealthyEndpoint, RetryPolicy, Router


def eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}:6379") for i in range(n)]


def fail(router: Router, address: str, times: int) -> None:
    for _ in range(times):
        router.record(address, ConnectionError("refused"))


def test_open_breaker_is_skipped_by_every_strategy() -> None:
    for name in ["round_robin", "weighted", "least_connections", "random", "ewma_latency"]:
        router = Router(eps(4), strategy=name, breaker=BreakerPolicy(fail_max=2))
        fail(router, "10.0.0.2:6379", 2)
        assert router.state_of("10.0.0.2:6379") == "open"
        counts = Counter(router.pick().address for _ in range(400))
        assert "10.0.0.2:6379" not in counts, name
        assert len(counts) == 3


def test_failures_below_fail_max_keep_endpoint_and_success_resets() -> None:
    router = Router(eps(2), breaker=BreakerPolicy(fail_max=3))
    fail(router, "10.0.0.1:6379", 2)
    router.record("10.0.0.1:6379", None)
    fail(router, "10.0.0.1:6379", 2)
    assert router.state_of("10.0.0.1:6379") == "closed"


def test_half_open_admits_bounded_trials_then_closes() -> None:
    policy = BreakerPolicy(fail_max=1, reset_timeout=0.05, half_open_max_calls=1)
    router = Router(eps(2), strategy="round_robin", breaker=policy)
    fail(router, "10.0.0.1:6379", 1)
    assert router.state_of("10.0.0.1:6379") == "open"
    time.sleep(0.06)
    leases = [router.checkout() for _ in range(6)]
    trials = [m for m, trial in leases if trial]
    assert len(trials) == 1 and trials[0].endpoint.address == "10.0.0.1:6379"
    assert router.state_of("10.0.0.1:6379") == "half-open"
    for member, trial in leases:
        router.checkin(member, trial, None, 0.001)
    assert router.state_of("10.0.0.1:6379") == "closed"


def test_failed_trial_reopens() -> None:
    policy = BreakerPolicy(fail_max=1, reset_timeout=0.05)
    router = Router(eps(2), breaker=policy)
    fail(router, "10.0.0.1:6379", 1)
    time.sleep(0.06)
    while True:
        member, trial = router.checkout()
        if trial:
            break
        router.checkin(member, trial, None, None)
    router.checkin(member, trial, ConnectionError("still down"), None)
    assert router.state_of("10.0.0.1:6379") == "open"
    assert all(router.pick().address == "10.0.0.2:6379" for _ in range(20))


def test_ejection_cap_routes_over_all_in_panic() -> None:
    router = Router(eps(4), breaker=BreakerPolicy(fail_max=1, max_ejection_percent=50))
    fail(router, "10.0.0.1:6379", 1)
    fail(router, "10.0.0.2:6379", 1)
    assert len({router.pick().address for _ in range(40)}) == 2  # 50 %: still within the cap
    fail(router, "10.0.0.3:6379", 1)
    assert len({router.pick().address for _ in range(40)}) == 4  # 75 % > cap: panic


def test_every_breaker_open_raises_no_healthy_endpoint() -> None:
    router = Router(eps(2), breaker=BreakerPolicy(fail_max=1, max_ejection_percent=100))
    fail(router, "10.0.0.1:6379", 1)
    fail(router, "10.0.0.2:6379", 1)
    with pytest.raises(NoHealthyEndpoint) as info:
        router.pick()
    assert set(info.value.endpoints) == {"10.0.0.1:6379", "10.0.0.2:6379"}


def test_update_keeps_state_of_surviving_ids() -> None:
    router = Router(eps(3), breaker=BreakerPolicy(fail_max=1))
    fail(router, "10.0.0.1:6379", 1)
    member, _ = router.checkout(exclude={"10.0.0.1:6379", "10.0.0.3:6379"})
    router.update(
        [Endpoint("10.0.0.1:6379"), Endpoint("10.0.0.2:6379", weight=5), Endpoint("10.0.0.9:6379")]
    )
    stats = {s.address: s for s in router.snapshot()}
    assert set(stats) == {"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.9:6379"}
    assert stats["10.0.0.1:6379"].state == "open"
    assert stats["10.0.0.1:6379"].failures == 1
    assert stats["10.0.0.2:6379"].in_flight == 1 and stats["10.0.0.2:6379"].weight == 5
    assert stats["10.0.0.9:6379"].state == "closed" and stats["10.0.0.9:6379"].picks == 0
    router.checkin(member, False, None, None)
    assert {s.address: s.in_flight for s in router.snapshot()}["10.0.0.2:6379"] == 0


def test_lease_counts_in_flight_and_records_failures() -> None:
    router = Router(eps(1), breaker=BreakerPolicy(fail_max=2))
    with router.lease() as ep:
        assert router.snapshot()[0].in_flight == 1
    with pytest.raises(ConnectionError), router.lease():
        raise ConnectionError("boom")
    with pytest.raises(KeyError), router.lease():
        raise KeyError("application error: not the node's fault")
    stats = router.snapshot()[0]
    assert (stats.in_flight, stats.picks, stats.failures, stats.state) == (0, 3, 1, "closed")
    assert ep.address == "10.0.0.1:6379"


def test_call_fails_over_to_another_endpoint() -> None:
    router = Router(eps(3), strategy="round_robin", retry=RetryPolicy(attempts=3))
    seen: list[str] = []

    def fn(ep: Endpoint) -> str:
        seen.append(ep.address)
        if len(seen) < 3:
            raise ConnectionRefusedError(f"{ep.address} refused")
        return ep.address

    assert router.call(fn) == seen[-1]
    assert len(set(seen)) == 3  # never retried the same endpoint


def test_call_raises_last_error_when_attempts_exhausted() -> None:
    router = Router(eps(2), retry=RetryPolicy(attempts=2, idempotent=True))

    def fn(ep: Endpoint) -> None:
        raise TimeoutError(ep.address)

    with pytest.raises(TimeoutError):
        router.call(fn)


def test_listener_sees_state_changes() -> None:
    changes: list[tuple[str, str, str]] = []
    router = Router(
        eps(2),
        breaker=BreakerPolicy(fail_max=1),
        on_state_change=lambda ep, old, new: changes.append((ep.address, old, new)),
    )
    fail(router, "10.0.0.2:6379", 1)
    assert changes == [("10.0.0.2:6379", "closed", "open")]


def test_shared_breaker_state_through_pybreaker_storage() -> None:
    storages: dict[str, pybreaker.CircuitMemoryStorage] = {}

    def storage(name: str) -> pybreaker.CircuitMemoryStorage:
        return storages.setdefault(name, pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED))

    policy = BreakerPolicy(fail_max=1, storage=storage)
    first = Router(eps(2), breaker=policy)
    fail(first, "10.0.0.1:6379", 1)
    second = Router(eps(2), breaker=policy)  # another process, same storage
    assert second.state_of("10.0.0.1:6379") == "open"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fail_max": 0},
        {"reset_timeout": 0},
        {"max_ejection_percent": 101},
        {"half_open_max_calls": 0},
    ],
)
def test_breaker_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BreakerPolicy(**kwargs)  # type: ignore[arg-type]
