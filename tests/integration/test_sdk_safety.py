"""The SDK never applies a write twice, and its retries, breakers, strategies and
redirections behave, against real servers (hung with SIGSTOP, killed, ACL-limited)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import MovedError
from redis.retry import Retry

from balancer import BreakerPolicy, ClusterClient, Endpoint, RetryPolicy, Router
from balancer.errors import NodeUnavailable, OutcomeUnknown
from balancer.strategies import RoundRobin
from balancer.transport import NodeTransport, TransportOptions
from controller.localcluster import ClusterAuth, LocalCluster, ServerNode
from tests.conftest import FLAVORS, SERVERS, _flavor_param

STALL = 1.5  # seconds a primary stays SIGSTOPped: longer than the client's timeouts


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def shared(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One 3x1 cluster per flavor for the tests that leave it as they found it.
    A node timeout well above STALL: a stalled primary is never failed over."""
    cluster = LocalCluster(3, 1, binary=SERVERS[request.param], node_timeout_ms=8000)
    cluster.start()
    yield cluster
    cluster.stop()


def owner(cluster: LocalCluster, key: str) -> ServerNode:
    """The primary serving ``key``: the one that answers instead of redirecting."""
    for primary in cluster.primaries():
        try:
            primary.client().exists(key)
        except MovedError:
            continue
        return primary
    raise AssertionError(f"no primary owns {key}")


def stalled(node: ServerNode, seconds: float = STALL) -> threading.Thread:
    """SIGSTOP now, SIGCONT after ``seconds`` (from a thread); join the returned thread."""
    node.signal(signal.SIGSTOP)

    def resume() -> None:
        time.sleep(seconds)
        node.signal(signal.SIGCONT)

    thread = threading.Thread(target=resume, daemon=True)
    thread.start()
    return thread


def settle(node: ServerNode) -> None:
    """Wait until a resumed node answers again."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            node.client(timeout=0.5).ping()
            return
        except redis.RedisError:
            time.sleep(0.05)
    raise AssertionError(f"{node.address} did not come back")


@pytest.fixture
def client(shared: LocalCluster) -> Iterator[ClusterClient]:
    c = ClusterClient(shared.seed, socket_timeout=0.3, retry_deadline=5.0)
    yield c
    c.close()


def test_incr_on_a_stalled_primary_is_applied_once(
    client: ClusterClient, shared: LocalCluster
) -> None:
    key = "safety:incr"
    client.delete(key)
    node = owner(shared, key)
    resume = stalled(node)
    try:
        with pytest.raises(OutcomeUnknown) as info:
            client.incr(key)
    finally:
        resume.join()
    settle(node)
    # existing handlers of either redis-py type still catch it, and it says why
    assert isinstance(info.value, redis.TimeoutError)
    assert isinstance(info.value, redis.ConnectionError)
    assert "outcome unknown" in str(info.value) and node.address in str(info.value)
    assert client.get(key) == b"1"  # the server ran it once, after SIGCONT
    assert client.stats.unknown_outcomes >= 1


def test_pipelined_writes_on_a_stalled_primary_are_not_resent(
    client: ClusterClient, shared: LocalCluster
) -> None:
    counter, queue = "{safe}:n", "{safe}:q"
    node = owner(shared, counter)
    other = next(f"o:{i}" for i in range(1000) if owner(shared, f"o:{i}") is not node)
    client.delete(counter, queue, other)
    pipe = client.pipeline()
    pipe.incr(counter)
    pipe.lpush(queue, "job")
    pipe.set(other, "x")
    pipe.get(counter)
    resume = stalled(node)
    try:
        results = pipe.execute(raise_on_error=False)
    finally:
        resume.join()
    settle(node)
    assert isinstance(results[0], OutcomeUnknown) and isinstance(results[1], OutcomeUnknown)
    assert results[2] is True  # another node's command is unaffected
    assert results[3] == b"1"  # a read is re-run once the node answers again
    assert client.get(counter) == b"1" and client.llen(queue) == 1

    pipe.incr(counter)
    resume = stalled(node)
    try:
        with pytest.raises(OutcomeUnknown):
            pipe.execute()
    finally:
        resume.join()
    settle(node)
    assert client.get(counter) == b"2"


def test_a_read_on_a_stalled_primary_is_retried_and_succeeds(
    client: ClusterClient, shared: LocalCluster
) -> None:
    key = "safety:read"
    client.set(key, "v")
    node = owner(shared, key)
    resume = stalled(node)
    started = time.monotonic()
    try:
        assert client.get(key) == b"v"
    finally:
        resume.join()
    assert time.monotonic() - started >= STALL * 0.9  # it waited for the node, not failed
    settle(node)


def test_a_read_gives_up_at_the_deadline_while_its_node_hangs(shared: LocalCluster) -> None:
    key = "safety:deadline"
    node = owner(shared, key)
    policy = BreakerPolicy(fail_max=100)  # the breaker stays out of it here
    with ClusterClient(shared.seed, socket_timeout=0.3, retry_deadline=1.0, breaker=policy) as c:
        c.set(key, "v")
        resume = stalled(node, seconds=3.0)
        try:
            started = time.monotonic()
            with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
                c.get(key)  # the last failure: a read timeout or a handshake that hung
            elapsed = time.monotonic() - started
        finally:
            resume.join()
        settle(node)
    # one attempt may be in flight when the deadline passes: at most one socket timeout
    assert 1.0 <= elapsed < 1.0 + 0.3 + 0.4, elapsed


def test_writes_to_a_primary_with_an_open_breaker_fail_fast(shared: LocalCluster) -> None:
    key = "safety:fast"
    node = owner(shared, key)
    policy = BreakerPolicy(fail_max=2, reset_timeout=30)
    with ClusterClient(shared.seed, socket_timeout=0.3, retry_deadline=5.0, breaker=policy) as c:
        c.set(key, "v")
        resume = stalled(node, seconds=2.5)
        try:
            with pytest.raises(OutcomeUnknown):
                c.set(key, "w")  # sent, then waits out one socket timeout
            # the reconnect's handshake hangs too: a second failure opens the breaker
            with pytest.raises(NodeUnavailable):
                c.set(key, "w2")
            started = time.monotonic()
            with pytest.raises(NodeUnavailable, match="not sent"):
                c.set(key, "x")  # breaker open: refused here, nothing sent
            assert time.monotonic() - started < 0.25
        finally:
            resume.join()
        settle(node)
    assert node.client().get(key) == "w"  # the unknown outcome did land; nothing else sent


def test_a_strategy_instance_is_copied_per_shard(shared: LocalCluster) -> None:
    keys = [f"rr:{i}" for i in range(300)]
    with ClusterClient(shared.seed) as writer:
        for key in keys:
            writer.set(key, key)
    shards = shared.shard_map()
    for primary, replicas in shards:
        for replica in replicas:
            wait_synced(primary, replica)
            replica.client().config_resetstat()
    with ClusterClient(shared.seed, read_from="replicas", strategy=RoundRobin()) as reader:
        assert [reader.get(k) for k in keys] == [k.encode() for k in keys]
        assert reader.stats.moved == 0
    expected = {replicas[0].port: primary.client().dbsize() for primary, replicas in shards}
    # each replica served exactly its own shard's keys (it holds rr:* keys only here)
    served = {
        replicas[0].port: int(
            replicas[0].client().info("commandstats").get("cmdstat_get", {}).get("calls", 0)
        )
        for _, replicas in shards
    }
    with ClusterClient(shared.seed) as router:  # the owner of each key, from one slot map
        slot_map = router.slot_map
        owners = [slot_map.shard_for_slot(key_slot(k.encode())) for k in keys]
    own = {
        replicas[0].port: sum(1 for o in owners if o and o.primary.address == primary.address)
        for primary, replicas in shards
    }
    assert served == own and sum(served.values()) == len(keys), (served, expected)


def get_calls(node: ServerNode) -> int:
    return int(node.client().info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def wait_synced(primary: ServerNode, replica: ServerNode) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        offset = primary.client().info("replication")["master_repl_offset"]
        info = replica.client().info("replication")
        if info.get("master_link_status") == "up" and info.get("slave_repl_offset", -1) >= offset:
            return
        time.sleep(0.05)
    raise AssertionError(f"{replica.address} never caught up")


def test_asking_error_reply_leaves_no_reply_behind(shared: LocalCluster) -> None:
    primary = shared.primaries()[0]
    admin = primary.client()
    admin.acl_setuser(
        "noask", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-asking"]
    )
    try:
        options = TransportOptions(username="noask", password="pw", socket_timeout=2)
        transport = NodeTransport("127.0.0.1", primary.port, options, max_connections=1)
        key = next(f"a:{i}" for i in range(1000) if owner(shared, f"a:{i}") is primary)
        admin.set(key, "value")
        with pytest.raises(redis.ResponseError, match=r"NOPERM|permission"):
            transport.execute(("GET", key), asking=True)
        # the one pooled connection is reused, and answers its own command
        assert transport.execute(("PING",)) in (b"PONG", "PONG")
        assert transport.execute(("GET", key)) == b"value"
        transport.close()
    finally:
        admin.acl_deluser("noask")


def test_router_call_counts_redis_errors_and_retries_only_what_was_never_sent(
    shared: LocalCluster,
) -> None:
    primary = shared.primaries()[0]
    dead = Endpoint("127.0.0.1:1")  # nothing listens: connection refused
    live = Endpoint(primary.address)
    router = Router([dead, live], breaker=BreakerPolicy(fail_max=2, max_ejection_percent=100))

    def ping(ep: Endpoint) -> Any:
        plain = redis.Redis(ep.host, ep.port, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
        return plain.ping()

    for _ in range(6):
        assert router.call(ping) is True  # refused: failed over to the live node
    states = {s.address: (s.state, s.failures) for s in router.snapshot()}
    assert states[dead.address][0] == "open" and states[dead.address][1] >= 2
    assert states[live.address] == ("closed", 0)

    # a hung node times out: counted against it, and not re-run unless idempotent
    calls: list[str] = []
    key = next(f"router:{i}" for i in range(1000) if owner(shared, f"router:{i}") is primary)

    def incr(ep: Endpoint) -> Any:
        calls.append(ep.address)
        # no redis-py retries of its own: one send per call
        plain = redis.Redis(ep.host, ep.port, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
        return plain.incr(key)

    stopped = Router([live], breaker=BreakerPolicy(fail_max=1))
    resume = stalled(primary)
    try:
        with pytest.raises(redis.TimeoutError):
            stopped.call(incr)
    finally:
        resume.join()
    settle(primary)
    assert len(calls) == 1 and stopped.snapshot()[0].state == "open"
    flaky = Router([dead, live], retry=RetryPolicy(idempotent=True), strategy=_first_dead(dead))
    assert flaky.call(ping) is True


def _first_dead(dead: Endpoint) -> Callable[[], RoundRobin]:
    class DeadFirst(RoundRobin):
        def rebuild(self, members: Any) -> None:
            super().rebuild(sorted(members, key=lambda m: m.endpoint.id != dead.id))

    return DeadFirst


def test_refused_writes_are_retried_until_a_replica_takes_over(server_flavor: str) -> None:
    binary = SERVERS[server_flavor]
    with (
        LocalCluster(3, 1, binary=binary, node_timeout_ms=1000) as cluster,
        ClusterClient(cluster.seed, socket_timeout=0.3, retry_deadline=15.0) as c,
    ):
        key = "failover:n"
        assert c.incr(key) == 1
        node = owner(cluster, key)
        replica = cluster.replicas_of(node)[0]
        wait_synced(node, replica)
        node.kill()
        # refused connections prove the INCR never arrived: retried until the
        # replica is promoted, and applied exactly once
        assert c.incr(key) == 2
        assert replica.client().get(key) == "2"


def test_scan_iter_walks_every_primary_with_one_cursor_per_node(shared: LocalCluster) -> None:
    with ClusterClient(shared.seed) as c:
        for key in list(c.scan_iter(match="scan*")):
            c.delete(key)
        strings = {f"scan:{i}".encode() for i in range(600)}
        hashes = {f"scanh:{i}".encode() for i in range(40)}
        c.mset({k: b"v" for k in strings})
        for key in hashes:
            c.hset(key, "f", "v")
        walked = list(c.scan_iter(match="scan:*", count=25))
        assert len(walked) == len(set(walked)) and set(walked) == strings
        assert set(c.scan_iter(match="scan*", _type="hash")) == hashes
        owners = {owner(shared, k.decode()).port for k in strings}
        assert len(owners) == 3  # the keys really are spread over every primary


def test_a_replica_whose_link_is_down_gets_no_reads(server_flavor: str) -> None:
    auth = ClusterAuth(password="pw")
    with (
        LocalCluster(1, 1, binary=SERVERS[server_flavor], auth=auth) as cluster,
        ClusterClient(
            cluster.seed, password="pw", read_from="replicas", replica_check_interval=0.2
        ) as c,
    ):
        primary, (replica,) = cluster.shard_map()[0]
        c.set("k", "v")
        wait_synced(primary, replica)
        assert c.stale_replicas == frozenset()
        admin = replica.client()
        # the replica can no longer authenticate to its primary: its link goes down
        admin.config_set("masterauth", "wrong")
        admin.client_kill_filter(_type="master")
        wait_for(lambda: admin.info("replication")["master_link_status"] == "down")
        wait_for(lambda: replica.address in c.stale_replicas)
        admin.config_resetstat()
        assert [c.get("k") for _ in range(50)] == [b"v"] * 50  # served by the primary
        assert get_calls(replica) == 0
        admin.config_set("masterauth", "pw")
        wait_for(lambda: admin.info("replication")["master_link_status"] == "up")
        wait_for(lambda: c.stale_replicas == frozenset())
        assert [c.get("k") for _ in range(20)] == [b"v"] * 20
        assert get_calls(replica) == 20


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_failing_refreshes_are_rate_limited_across_threads(server_flavor: str) -> None:
    with (
        LocalCluster(3, 0, binary=SERVERS[server_flavor]) as cluster,
        ClusterClient(cluster.seed, retry_deadline=1.5, socket_connect_timeout=0.2) as c,
    ):
        c.set("k", "v")
        before = c.stats.refresh_attempts
        for node in cluster.nodes:
            node.kill()  # every node refuses: each call retries, asking for refreshes
        errors: list[BaseException] = []

        def read() -> None:
            try:
                c.get("k")
            except redis.RedisError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(8)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        elapsed = time.monotonic() - started
    assert len(errors) == 8 and elapsed < 1.5 + 1.0
    # at most one refresh per 0.1 s, doubling while they fail: a handful, not hundreds
    assert 1 <= c.stats.refresh_attempts - before <= 8, c.stats.refresh_attempts - before


def test_a_blocking_pop_waits_its_own_timeout_and_is_sent_once(shared: LocalCluster) -> None:
    queue = "safety:queue"
    node = owner(shared, queue)
    with ClusterClient(shared.seed, socket_timeout=0.3) as c:
        c.delete(queue)
        node.client().config_resetstat()
        started = time.monotonic()
        assert c.blpop([queue], timeout=1) is None  # an idle queue is not a hung node
        assert 0.9 <= time.monotonic() - started < 2.0
        pusher = threading.Timer(0.6, lambda: node.client().rpush(queue, "job"))
        pusher.start()
        assert c.blpop([queue], timeout=2) == (queue.encode(), b"job")
        pusher.join()
        calls = node.client().info("commandstats")["cmdstat_blpop"]["calls"]
        assert calls == 2  # never re-sent
        assert all(state == "closed" for state in c.node_states().values())


def test_a_blocking_pop_on_a_hung_primary_is_never_resent(shared: LocalCluster) -> None:
    queue = "safety:hung-queue"
    node = owner(shared, queue)
    with ClusterClient(shared.seed, socket_timeout=0.3) as c:
        c.delete(queue)
        resume = stalled(node, seconds=2.5)
        try:
            started = time.monotonic()
            with pytest.raises(OutcomeUnknown):
                c.blpop([queue], timeout=1)
            assert time.monotonic() - started < 1.0 + 0.3 + 0.5
            assert c.node_states().get(node.address, "closed") == "closed"
        finally:
            resume.join()
        settle(node)
        node.client().rpush(queue, "job")
        time.sleep(0.2)
        # the abandoned pop took nothing: the item is still there for the next consumer
        assert c.lrange(queue, 0, -1) == [b"job"]


def test_pipelined_reads_leave_a_replica_that_cannot_be_connected(shared: LocalCluster) -> None:
    keys = [f"pipe-read:{i}" for i in range(60)]
    with ClusterClient(shared.seed) as writer:
        writer.mset({k: k for k in keys})
    primary, (replica,) = shared.shard_map()[0]
    wait_synced(primary, replica)
    # no replica watch: nothing is connected to the replica before the stall
    with ClusterClient(shared.seed, read_from="replicas", socket_timeout=0.3,
                       socket_connect_timeout=0.3, max_replica_lag=None) as c:  # fmt: skip
        resume = stalled(replica, seconds=2.0)  # its handshake (READONLY) times out
        try:
            pipe = c.pipeline()
            for key in keys:
                pipe.get(key)
            assert pipe.execute() == [k.encode() for k in keys]
        finally:
            resume.join()
        settle(replica)


def test_a_node_that_left_the_cluster_is_not_believed_about_the_slots(
    cluster: LocalCluster,
) -> None:
    with ClusterClient(cluster.seed) as c:
        c.set("k", "v")
    _, (leaver,) = cluster.shard_map()[0]
    leaver_id = leaver.client().execute_command("CLUSTER", "MYID")
    for node in cluster.nodes:
        if node is not leaver:
            node.client().execute_command("CLUSTER", "FORGET", leaver_id)
    leaver.client().execute_command("CLUSTER", "RESET", "HARD")  # alive, knows only itself
    # asked first, it answers with a one-node, slot-less view: the next node is asked
    with ClusterClient([leaver.address, cluster.seed]) as c:
        assert c.slot_map.uncovered == 0
        assert leaver.address not in c.slot_map.addresses()
        assert c.get("k") == b"v"
