"""ClusterClient against real clusters: commands, routing, pipelines, read_from."""

from __future__ import annotations

import pytest
import redis

from balancer import ClusterClient, CrossSlotError
from controller.localcluster import LocalCluster


@pytest.fixture
def client(cluster: LocalCluster) -> ClusterClient:
    c = ClusterClient.from_url(cluster.url)
    yield c
    c.close()


def test_commands_route_to_the_owner(client: ClusterClient, cluster: LocalCluster) -> None:
    for i in range(200):
        assert client.set(f"key:{i}", i) is True
    assert [client.get(f"key:{i}") for i in range(200)] == [str(i).encode() for i in range(200)]
    # every primary holds some of the keys, and the keys sit where CLUSTER KEYSLOT says
    per_node = {n.port: n.client().dbsize() for n in cluster.primaries()}
    assert sum(per_node.values()) == 200 and all(v > 0 for v in per_node.values())
    assert client.dbsize() == 200


def test_data_structures_and_scripts(client: ClusterClient) -> None:
    assert client.hset("h", mapping={"a": 1, "b": 2}) == 2
    assert client.hgetall("h") == {b"a": b"1", b"b": b"2"}
    assert client.rpush("l", 1, 2, 3) == 3 and client.lrange("l", 0, -1) == [b"1", b"2", b"3"]
    assert client.zadd("z", {"x": 1.5}) == 1 and client.zscore("z", "x") == 1.5
    assert client.incrby("n", 5) == 5
    assert client.expire("n", 100) is True and 0 < client.ttl("n") <= 100
    assert client.eval("return redis.call('incr', KEYS[1])", 1, "n") == 6
    assert client.xadd("s", {"f": "v"}) and client.xlen("s") == 1


def test_cross_slot_multi_key_commands_are_split(client: ClusterClient) -> None:
    mapping = {f"user:{i}": f"v{i}" for i in range(50)}
    assert client.mset(mapping) is True
    keys = [*mapping, "missing"]
    assert client.mget(keys) == [v.encode() for v in mapping.values()] + [None]
    assert client.exists(*keys) == 50
    assert client.delete(*list(mapping)[:20]) == 20
    assert client.unlink(*list(mapping)[20:]) == 30
    assert client.exists(*keys) == 0


def test_same_slot_multi_key_goes_through_and_cross_slot_raises(client: ClusterClient) -> None:
    client.set("{u1}:a", 1)
    client.set("{u1}:b", 2)
    assert client.sunionstore("{u1}:dest", ["{u1}:s1", "{u1}:s2"]) == 0
    assert client.rename("{u1}:a", "{u1}:c") is True
    with pytest.raises(CrossSlotError, match="hash tag"):
        client.rename("{u1}:c", "{u2}:c")


def test_pipeline_groups_per_node_and_keeps_order(client: ClusterClient) -> None:
    with client.pipeline() as pipe:
        for i in range(100):
            pipe.set(f"p:{i}", i)
            pipe.incr(f"c:{i}")
        results = pipe.execute()
    assert results == [True, 1] * 100
    pipe = client.pipeline()
    pipe.get("p:7").lpush("p:7", 1).get("p:8")
    out = pipe.execute(raise_on_error=False)
    assert out[0] == b"7" and isinstance(out[1], redis.ResponseError) and out[2] == b"8"
    pipe.get("p:7").lpush("p:7", 1)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pipe.execute()


def test_decode_responses(cluster: LocalCluster) -> None:
    with ClusterClient(cluster.seed, decode_responses=True) as c:
        c.set("s", "héllo")
        assert c.get("s") == "héllo"


def _gets_served(node: object) -> int:
    stats = node.client().info("commandstats")  # type: ignore[attr-defined]
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


@pytest.mark.parametrize("read_from", ["primary", "replicas", "any"])
def test_read_from_decides_which_nodes_serve_reads(cluster: LocalCluster, read_from: str) -> None:
    with ClusterClient(cluster.seed, read_from=read_from) as c:  # type: ignore[arg-type]
        for i in range(300):
            c.set(f"r:{i}", i)
        for i in range(300):
            assert c.get(f"r:{i}") == str(i).encode()
    primaries = sum(_gets_served(p) for p, _ in cluster.shard_map())
    replicas = sum(_gets_served(r) for _, rs in cluster.shard_map() for r in rs)
    assert primaries + replicas == 300
    if read_from == "primary":
        assert replicas == 0
    elif read_from == "replicas":
        assert primaries == 0
    else:
        assert primaries > 50 and replicas > 50


def test_replica_reads_fall_back_to_primary_without_replicas(make_cluster: object) -> None:
    cluster = make_cluster(2, 0)  # type: ignore[operator]
    with ClusterClient(cluster.seed, read_from="replicas") as c:
        c.set("x", 1)
        assert c.get("x") == b"1"


def test_unreachable_seeds_give_clear_error() -> None:
    from balancer import ClusterError
    from controller.localcluster import free_port

    with pytest.raises(ClusterError, match="no node answered"):
        ClusterClient(f"127.0.0.1:{free_port()}")


def test_read_from_validated() -> None:
    with pytest.raises(ValueError, match="read_from"):
        ClusterClient("127.0.0.1:1", read_from="nearest")  # type: ignore[arg-type]


def test_breaker_state_shared_through_circuit_redis_storage(make_cluster: object) -> None:
    """Two routers (think: two processes) share breaker state via pybreaker's storage."""
    import pybreaker

    from balancer import BreakerPolicy, Endpoint, Router

    store = make_cluster(1, 0)  # type: ignore[operator]
    conn = redis.Redis(host="127.0.0.1", port=store.nodes[0].port)  # pybreaker wants bytes

    def storage(name: str) -> pybreaker.CircuitRedisStorage:
        return pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, conn, namespace=f"slotpilot:{name}"
        )

    policy = BreakerPolicy(fail_max=2, storage=storage)
    endpoints = [Endpoint("10.0.0.1:6379"), Endpoint("10.0.0.2:6379")]
    first, second = Router(endpoints, breaker=policy), Router(endpoints, breaker=policy)
    first.record("10.0.0.1:6379", ConnectionError("refused"))
    first.record("10.0.0.1:6379", ConnectionError("refused"))
    assert first.state_of("10.0.0.1:6379") == "open"
    third = Router(endpoints, breaker=policy)  # a process starting now sees it open
    assert third.state_of("10.0.0.1:6379") == "open"
    assert {third.pick().address for _ in range(10)} == {"10.0.0.2:6379"}
    assert second.state_of("10.0.0.2:6379") == "closed"
