"""Strategy behaviour and distributions, without sockets."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from balancer import Endpoint, Router
from balancer.strategies import EwmaLatency, LeastConnections


def eps(*weights: float) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}:6379", weight=w) for i, w in enumerate(weights)]


def picks(router: Router, n: int) -> Counter[str]:
    return Counter(router.pick().address for _ in range(n))


def test_round_robin_cycles_in_order() -> None:
    router = Router(eps(1, 1, 1), strategy="round_robin")
    seq = [router.pick().address for _ in range(6)]
    assert seq[:3] == seq[3:]
    assert sorted(seq[:3]) == ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"]


@pytest.mark.parametrize("weights", [(3, 1), (5, 3, 2), (0.25, 0.75), (1, 1, 1, 7)])
def test_weighted_ratios_are_exact_over_whole_cycles(weights: tuple[float, ...]) -> None:
    router = Router(eps(*weights), strategy="weighted")
    total = sum(weights)
    n = int(4000 / total) * total
    counts = picks(router, int(n * 1))
    for i, w in enumerate(weights):
        share = counts[f"10.0.0.{i + 1}:6379"] / sum(counts.values())
        assert share == pytest.approx(w / total, abs=0.01)


def test_weighted_is_smooth_not_bursty() -> None:
    # nginx's example: weights 5,1,1 never give the heavy node more than its share in a row.
    router = Router(eps(5, 1, 1), strategy="weighted")
    seq = [router.pick().address for _ in range(70)]
    longest = max(
        len(run) for run in "".join("a" if a.endswith("1:6379") else "." for a in seq).split(".")
    )
    assert longest <= 3


def test_weighted_irrational_weights_use_live_heap() -> None:
    router = Router(eps(1 / 3 + 1e-9, 2 / 3), strategy="weighted")
    counts = picks(router, 3000)
    assert counts["10.0.0.2:6379"] / 3000 == pytest.approx(2 / 3, abs=0.01)


def test_random_is_roughly_uniform() -> None:
    counts = picks(Router(eps(1, 1, 1, 1), strategy="random"), 8000)
    assert all(1700 < c < 2300 for c in counts.values())


def test_least_connections_prefers_idle_endpoints() -> None:
    router = Router(eps(1, 1, 1), strategy="least_connections")
    busy = [router.checkout() for _ in range(1)]
    busy_id = busy[0][0].endpoint.id
    for _ in range(20):  # load the first pick heavily
        router._members[busy_id].begin()
    counts = picks(router, 3000)
    assert counts[busy_id] == 0


def test_least_connections_exact_takes_the_minimum() -> None:
    router = Router(eps(1, 1, 1), strategy=LeastConnections(exact=True))
    a, _ = router.checkout()
    b, _ = router.checkout()
    c, _ = router.checkout()
    assert len({a.endpoint.id, b.endpoint.id, c.endpoint.id}) == 3
    router.checkin(b, False, None, None)
    assert router.pick().id == b.endpoint.id


def test_least_connections_weights_scale_capacity() -> None:
    router = Router(eps(4, 1), strategy=LeastConnections(exact=True))
    held = [router.checkout() for _ in range(10)]
    counts = Counter(m.endpoint.address for m, _ in held)
    assert counts["10.0.0.1:6379"] == 8 and counts["10.0.0.2:6379"] == 2


def test_ewma_latency_avoids_slow_endpoint() -> None:
    strategy = EwmaLatency(decay_seconds=10)
    router = Router(eps(1, 1), strategy=strategy)
    slow, fast = router._members["10.0.0.1:6379"], router._members["10.0.0.2:6379"]
    strategy.observe(slow, 0.050)
    strategy.observe(fast, 0.001)
    counts = picks(router, 1000)
    assert counts["10.0.0.2:6379"] == 1000
    # peak: one slow sample on the fast node makes it expensive at once
    strategy.observe(fast, 0.200)
    assert picks(router, 200)["10.0.0.1:6379"] == 200


def test_unknown_strategy_lists_valid_names() -> None:
    with pytest.raises(
        ValueError, match=r"ewma_latency.*least_connections.*random.*round_robin.*weighted"
    ):
        Router(eps(1), strategy="fastest")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Endpoint("10.0.0.1:6379", weight=0),
        lambda: Endpoint("10.0.0.1:6379", weight=-1),
        lambda: Endpoint("10.0.0.1"),
        lambda: Endpoint("10.0.0.1:http"),
        lambda: Endpoint("10.0.0.1:70000"),
        lambda: Endpoint(""),
        lambda: Router([]),
    ],
)
def test_bad_input_raises_value_error(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_ipv6_address() -> None:
    ep = Endpoint("[::1]:6379")
    assert (ep.host, ep.port) == ("::1", 6379)


@pytest.mark.parametrize(
    "name", ["round_robin", "weighted", "least_connections", "random", "ewma_latency"]
)
def test_strategies_are_thread_safe(name: str) -> None:
    router = Router(eps(1, 2, 3, 4), strategy=name)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2000):
                with router.lease():
                    pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    stats = router.snapshot()
    assert sum(s.picks for s in stats) == 8000
    assert all(s.in_flight == 0 for s in stats)
