"""The cluster lease against real servers: one holder at a time, takeover after expiry,
compare-and-extend / compare-and-delete never touch another holder's lease."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from balancer import ClusterClient
from controller.lease import ClusterLease, LeaseHeld, LeaseState
from controller.localcluster import LocalCluster
from tests.conftest import SERVERS

pytestmark = pytest.mark.skipif("valkey" not in SERVERS, reason="no valkey-server")


@pytest.fixture(scope="module")
def lease_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, 0, binary=SERVERS["valkey"]) as cluster:
        yield cluster


@pytest.fixture
def client(lease_cluster: LocalCluster) -> Iterator[ClusterClient]:
    with ClusterClient(lease_cluster.seed, socket_timeout=2.0) as c:
        yield c


def _key(request: pytest.FixtureRequest) -> str:
    return "{slotpilot}:lease:" + str(request.node.name)


def test_one_holder_and_who(client: ClusterClient, request: pytest.FixtureRequest) -> None:
    key = _key(request)
    first = ClusterLease(client, owner="alpha", ttl_seconds=10, key=key)
    second = ClusterLease(client, owner="beta", ttl_seconds=10, key=key)
    assert first.holder() is None
    first.acquire()
    first.acquire()  # re-entrant for the same token
    assert first.held
    with pytest.raises(LeaseHeld) as caught:
        second.acquire()
    assert caught.value.holder == "alpha"
    assert 0 < caught.value.expires_in <= 10
    assert "cluster is managed by alpha (lease expires in" in str(caught.value)
    assert not second.held
    assert second.holder() == "alpha"
    second.release()  # compare-and-delete: beta must not remove alpha's lease
    assert first.holder() == "alpha"
    assert not second.renew()
    first.release()
    assert first.holder() is None
    assert not first.held
    second.acquire()
    assert second.holder() == "beta"
    second.release()


def test_takeover_after_expiry(client: ClusterClient, request: pytest.FixtureRequest) -> None:
    key = _key(request)
    dead = ClusterLease(client, owner="dead", ttl_seconds=0.5, key=key)
    alive = ClusterLease(client, owner="alive", ttl_seconds=5, key=key)
    dead.acquire()
    with pytest.raises(LeaseHeld):
        alive.acquire()
    deadline = time.monotonic() + 5
    while True:  # the dead holder never renews: the key expires on its own
        try:
            alive.acquire()
            break
        except LeaseHeld:
            assert time.monotonic() < deadline, "lease never expired"
            time.sleep(0.1)
    assert alive.holder() == "alive"
    assert not dead.renew()  # compare-and-extend refuses: it is alive's lease now
    assert not dead.held
    dead.release()
    assert alive.holder() == "alive"
    alive.release()


def test_context_renews_and_releases(client: ClusterClient, request: pytest.FixtureRequest) -> None:
    key = _key(request)
    other = ClusterLease(client, owner="other", ttl_seconds=5, key=key)
    with ClusterLease(client, owner="worker", ttl_seconds=0.6, key=key) as lease:
        time.sleep(1.5)  # well past the TTL: only the renew thread keeps it
        assert lease.held
        assert not lease.lost
        with pytest.raises(LeaseHeld) as caught:
            other.acquire()
        assert caught.value.holder == "worker"
    assert other.holder() is None  # released on exit, not left to expire
    other.acquire()
    other.release()


def test_works_with_redis_py_cluster(
    lease_cluster: LocalCluster, client: ClusterClient, request: pytest.FixtureRequest
) -> None:
    key = _key(request)
    host, port = lease_cluster.seed.rsplit(":", 1)
    with redis.RedisCluster(host=host, port=int(port), decode_responses=True) as rc:
        ours = ClusterLease(rc, owner="redis-py", ttl_seconds=10, key=key)
        ours.acquire()
        with pytest.raises(LeaseHeld) as caught:
            ClusterLease(client, owner="sdk", key=key).acquire()
        assert caught.value.holder == "redis-py"
        assert ours.renew()
        ours.release()
        assert ours.holder() is None


def test_hold_renews_or_reports_the_holder(
    client: ClusterClient, request: pytest.FixtureRequest
) -> None:
    key = _key(request)
    ours = ClusterLease(client, owner="loop-a", ttl_seconds=10, key=key)
    theirs = ClusterLease(client, owner="loop-b", ttl_seconds=10, key=key)
    assert ours.hold() == LeaseState(True, "loop-a")
    assert ours.hold().holding  # renewed, not re-taken
    state = theirs.hold()
    assert not state.holding and state.holder == "loop-a"
    assert state.expires_in is not None and 0 < state.expires_in <= 10
    ours.release()
    assert theirs.hold() == LeaseState(True, "loop-b")
    theirs.release()


def test_still_held_renews_a_lease_going_stale_and_sees_a_takeover(
    client: ClusterClient, request: pytest.FixtureRequest
) -> None:
    """The check made before each migration batch: no round trip while the lease was
    confirmed recently; a renewal once half a TTL has passed; False once someone else
    holds it."""
    key = _key(request)
    lease = ClusterLease(client, owner="alpha", ttl_seconds=0.6, key=key)
    lease.acquire()
    assert lease.still_held()
    time.sleep(0.4)  # past half the TTL, not yet expired: renewed, so still ours
    assert lease.still_held()
    assert client.pttl(key) > 400  # the renewal reset the key's TTL to 600 ms
    client.delete(key)
    ClusterLease(client, owner="beta", ttl_seconds=10, key=key).acquire()
    time.sleep(0.4)
    assert not lease.still_held() and not lease.held
