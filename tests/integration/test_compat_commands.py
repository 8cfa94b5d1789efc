"""ClusterClient next to redis-py's RedisCluster on one real cluster: the same calls give
the same results (SCAN, weighted Z*STORE, scripts, locks, node selection, admin methods).
Where ClusterClient is deliberately different, the test says so."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode
from redis.exceptions import LockError, RedisClusterException

from balancer import ClusterClient
from controller.localcluster import LocalCluster
from tests.conftest import FLAVORS, SERVERS, _flavor_param

Client = Any  # ClusterClient or redis.RedisCluster: the same calls on either


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def compat_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One 3x1 cluster per flavor for the whole module."""
    cluster = LocalCluster(3, 1, binary=SERVERS[request.param])
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pair(compat_cluster: LocalCluster) -> Iterator[tuple[ClusterClient, redis.RedisCluster]]:
    """(ours, theirs), both started from the same seed (so the same default node)."""
    ours = ClusterClient(compat_cluster.seed)
    theirs = redis.RedisCluster.from_url(compat_cluster.url)
    yield ours, theirs
    ours.close()
    theirs.close()


def same(
    pair: tuple[ClusterClient, redis.RedisCluster],
    action: Callable[[Client], Any],
    setup: Callable[[Client], Any] | None = None,
) -> Any:
    """Run ``action`` through each client on a freshly flushed cluster; assert equal
    results and return them."""
    results = []
    for client in (pair[1], pair[0]):
        pair[1].flushall()
        if setup is not None:
            setup(client)
        results.append(action(client))
    assert results[1] == results[0]
    return results[0]


def names(nodes: Any) -> list[str]:
    return sorted(n.name for n in nodes)


# -- SCAN -----------------------------------------------------------------------------


def _fill(c: Client) -> None:
    c.mset_nonatomic({f"k:{i}": i for i in range(300)})
    for i in range(20):
        c.hset(f"h:{i}", "f", "v")


def test_scan_returns_a_cursor_per_primary_and_every_key(pair: Any) -> None:
    theirs = pair[1]

    def first_page(c: Client) -> Any:
        cursors, keys = c.scan(0, count=1000)
        return sorted(cursors), {type(v) for v in cursors.values()}, sorted(keys)

    primaries, kinds, keys = same(pair, first_page, _fill)
    assert primaries == names(theirs.get_primaries()) and kinds == {int} and len(keys) == 320
    same(pair, lambda c: sorted(c.scan_iter()), _fill)
    same(pair, lambda c: sorted(c.scan_iter(match="k:1*", count=7)), _fill)
    same(pair, lambda c: sorted(c.scan_iter(_type="hash")), _fill)


def test_scan_cursor_walk_on_one_node(pair: Any) -> None:
    theirs = pair[1]

    def walk(c: Client) -> list[bytes]:
        node = c.get_node(node_name=theirs.get_primaries()[0].name)
        found: list[bytes] = []
        cursor = 0
        while True:
            cursors, keys = c.scan(cursor, count=10, target_nodes=node)
            found += keys
            cursor = cursors[node.name]
            if cursor == 0:
                return sorted(found)

    assert same(pair, walk, _fill)


# -- sorted sets with weights ---------------------------------------------------------


def _stored(c: Client, count: int) -> Any:
    return count, c.zrange("{z}d", 0, -1, withscores=True)


def _zsets(c: Client) -> None:
    c.zadd("{z}a", {"x": 1, "y": 2})
    c.zadd("{z}b", {"y": 10, "z": 3})


@pytest.mark.parametrize(
    "action",
    [
        lambda c: _stored(c, c.zunionstore("{z}d", {"{z}a": 2, "{z}b": 3})),
        lambda c: _stored(c, c.zinterstore("{z}d", {"{z}a": 2, "{z}b": 3}, aggregate="MAX")),
        lambda c: c.zunion({"{z}a": 2, "{z}b": 3}, withscores=True),
        lambda c: c.zinter({"{z}a": 2, "{z}b": 3}, aggregate="MIN", withscores=True),
        lambda c: c.zunion(["{z}a", "{z}b"]),
        lambda c: (c.zdiffstore("{z}d", ["{z}a", "{z}b"]), c.zdiff(["{z}a", "{z}b"])),
        lambda c: c.zintercard(2, ["{z}a", "{z}b"]),
    ],
    ids=["zunionstore", "zinterstore", "zunion", "zinter", "zunion-list", "zdiff", "zintercard"],
)  # fmt: skip
def test_sorted_set_aggregates_with_weights(pair: Any, action: Callable[[Client], Any]) -> None:
    same(pair, action, _zsets)


# -- scripts and locks ----------------------------------------------------------------


def test_register_script_runs_and_reloads_after_a_flush(pair: Any) -> None:
    def run(c: Client) -> Any:
        script = c.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
        first = script(keys=["{s}n"], args=[5])
        c.script_flush()
        return first, script(keys=["{s}n"], args=[2]), c.get("{s}n")

    assert same(pair, run) == (5, 7, b"7")
    same(pair, lambda c: c.script_exists(c.script_load("return 1"), "0" * 40))


def test_lock_excludes_a_second_holder_and_releases(pair: Any) -> None:
    def run(c: Client) -> Any:
        first = c.lock("locks:a", timeout=5)
        second = c.lock("locks:a", timeout=5, blocking=False)
        steps = [first.acquire(), second.acquire(), first.locked(), first.owned()]
        steps += [first.extend(5), first.release(), second.acquire(blocking=False)]
        second.release()
        with pytest.raises(LockError):
            second.release()
        with c.lock("locks:b", blocking_timeout=1):
            steps.append(c.exists("locks:b"))
        return [*steps, c.exists("locks:b")]

    assert same(pair, run) == [True, False, True, True, True, None, True, 1, 0]


# -- node selection -------------------------------------------------------------------


def test_node_api_matches(pair: Any) -> None:
    ours, theirs = pair
    same(pair, lambda c: names(c.get_nodes()))
    same(pair, lambda c: names(c.get_primaries()))
    same(pair, lambda c: names(c.get_replicas()))
    same(pair, lambda c: c.get_default_node().name)
    same(pair, lambda c: [c.keyslot(k) for k in ("a", b"{x}b", 7)])
    same(pair, lambda c: [c.get_node_from_key(k).name for k in ("a", "b", "c")])
    same(pair, lambda c: [c.get_node_from_key(k, replica=True).name for k in ("a", "b")])
    node = theirs.get_primaries()[1]
    assert isinstance(ours.get_node(node.host, node.port), ClusterNode)
    assert ours.get_node(node.host, node.port) == node
    assert ours.get_node(node_name="127.0.0.1:1") is None
    assert isinstance(ours.get_random_node(), ClusterNode)
    default = ours.get_default_node()
    assert ours.set_default_node(ours.get_node(node_name=node.name)) is True
    assert ours.info()["tcp_port"] == node.port
    assert ours.set_default_node(default) is True and ours.info()["tcp_port"] == default.port


def test_a_node_connection_and_monitor_as_redis_cluster(pair: Any) -> None:
    """``get_redis_connection(node)`` is a plain client to that node; ``monitor()`` sees
    the commands the default node runs, for both clients."""
    ours, theirs = pair
    for client in (ours, theirs):
        node = client.get_primaries()[0]
        direct = client.get_redis_connection(node)
        assert isinstance(direct, redis.Redis)
        assert direct.info("server")["tcp_port"] == node.port
        assert client.get_redis_connection(node) is direct  # one per node
        with client.monitor(target_node=node) as monitor:
            direct.echo("seen-by-monitor")
            seen: list[str] = []
            for _ in range(20):  # a new connection's handshake comes first
                seen.append(monitor.next_command()["command"])
                if "seen-by-monitor" in seen[-1]:
                    break
        assert "seen-by-monitor" in seen[-1], seen


def test_target_nodes(pair: Any) -> None:
    ours, theirs = pair
    setup = lambda c: c.mset_nonatomic({f"t:{i}": i for i in range(50)})  # noqa: E731
    for target in ("primaries", "replicas", "all", "random"):
        same(pair, lambda c, t=target: type(c.ping(target_nodes=t)))
    same(pair, lambda c: sorted(c.info(target_nodes=c.PRIMARIES)), setup)
    same(pair, lambda c: sorted(c.config_get("maxmemory", target_nodes=c.ALL_NODES)), setup)
    same(pair, lambda c: c.dbsize(target_nodes=c.PRIMARIES), setup)
    node = theirs.get_primaries()[2]
    same(pair, lambda c: c.dbsize(target_nodes=node), setup)
    same(pair, lambda c: c.dbsize(target_nodes=[node]), setup)
    same(pair, lambda c: c.dbsize(target_nodes={"n": node}), setup)
    same(pair, lambda c: c.echo("hi", target_nodes=node))
    with pytest.raises(TypeError):
        ours.ping(target_nodes=3)


def test_multi_key_split_across_slots(pair: Any) -> None:
    mapping = {f"m:{i}": str(i) for i in range(40)}
    same(pair, lambda c: c.mset_nonatomic(mapping))
    same(pair, lambda c: c.mget_nonatomic([*mapping, "nope"]), lambda c: c.mset_nonatomic(mapping))
    same(pair, lambda c: c.touch(*mapping, "nope"), lambda c: c.mset_nonatomic(mapping))
    same(pair, lambda c: c.exists(*mapping, "nope"), lambda c: c.mset_nonatomic(mapping))
    same(pair, lambda c: c.unlink(*mapping), lambda c: c.mset_nonatomic(mapping))


def test_deliberate_differences_on_multi_key_and_size(pair: Any) -> None:
    ours, theirs = pair
    mapping = {f"d:{i}": str(i) for i in range(40)}
    with pytest.raises(RedisClusterException):
        theirs.mget(list(mapping))
    assert ours.mset(mapping) is True  # split per slot, where RedisCluster refuses
    assert ours.mget(list(mapping)) == [v.encode() for v in mapping.values()]
    # DBSIZE and KEYS: the whole cluster (RedisCluster asks its default node only)
    assert ours.dbsize() == theirs.dbsize(target_nodes=theirs.PRIMARIES) >= 40
    assert sorted(ours.keys("d:*")) == sorted(theirs.keys("d:*", target_nodes=theirs.PRIMARIES))
    # a keyless command RedisCluster cannot route goes to the default node here
    with pytest.raises(RedisClusterException):
        theirs.echo("x")
    assert ours.echo("x") == b"x"


# -- admin and keyless commands -------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        lambda c: type(c.time()),
        lambda c: sorted(c.info())[:5],
        lambda c: c.info("server")["tcp_port"],
        lambda c: c.config_get("maxmemory*"),
        lambda c: (c.config_set("slowlog-max-len", 200), c.config_get("slowlog-max-len")),
        lambda c: (c.object("encoding", "a"), c.object("refcount", "a")),
        lambda c: type(c.memory_usage("a")),
        lambda c: c.flushdb(),
        lambda c: c.flushall(),
        lambda c: (c.slowlog_len() >= 0, type(c.slowlog_get())),
        lambda c: (c.slowlog_reset(), c.slowlog_len()),
        lambda c: (c.acl_whoami(), c.acl_users(), c.acl_cat()[:3]),
        lambda c: (c.client_setname("compat"), c.client_getname()),
        lambda c: (type(c.client_id()), type(c.client_list()), type(c.client_info())),
        lambda c: c.cluster_info()["cluster_state"],
        lambda c: sorted(c.cluster_nodes()),
        lambda c: (c.cluster_keyslot("a"), c.cluster_countkeysinslot(c.keyslot("a"))),
        lambda c: c.cluster_get_keys_in_slot(c.keyslot("a"), 10),
        lambda c: [sorted(s) for s in c.cluster_shards()],
        lambda c: sorted(c.cluster_slots()),
        lambda c: c.cluster_myid(min(c.get_primaries(), key=lambda n: n.name)),
        lambda c: c.readonly(target_nodes=min(c.get_primaries(), key=lambda n: n.name)),
        lambda c: type(c.lastsave()),
        lambda c: c.command_count() > 100,
        lambda c: c.wait(1, 5000),  # every primary has its replica: 1, whenever it acks
        lambda c: c.pubsub_numpat(),
        lambda c: (c.publish("news", "x"), c.pubsub_channels(), c.pubsub_numsub("news")),
        lambda c: c.spublish("news", "x"),
        lambda c: type(c.memory_stats()),
    ],
)
def test_admin_methods(pair: Any, action: Callable[[Client], Any]) -> None:
    same(pair, action, lambda c: c.set("a", 1))


def test_randomkey_finds_a_key_on_any_shard(pair: Any) -> None:
    """RANDOMKEY asks every primary: None only when the whole cluster is empty (one
    random node would answer None two times in three here)."""
    ours = pair[0]
    ours.flushall()
    assert ours.randomkey() is None
    ours.set("a", 1)  # one key, on one of three shards
    assert {ours.randomkey() for _ in range(10)} == {b"a"}


def test_functions(pair: Any) -> None:
    code = "#!lua name=compat\nredis.register_function('f', function(k, a) return #k end)"

    def run(c: Client) -> Any:
        loaded = c.function_load(code)
        listed = c.function_list()
        called = c.fcall("f", 1, "x"), c.fcall("f", 0)
        return loaded, listed, called, c.function_delete("compat")

    same(pair, run)
    same(pair, lambda c: c.function_flush())


@pytest.mark.parametrize(
    "action",
    [
        lambda c: c.rename("{a}x", "{b}x"),
        lambda c: c.sunionstore("{a}d", ["{b}s", "{c}s"]),
        lambda c: c.lmove("{a}l", "{b}l"),
        lambda c: c.zunionstore("{a}d", {"{b}z": 1, "{c}z": 2}),
    ],
    ids=["rename", "sunionstore", "lmove", "zunionstore"],
)
def test_cross_slot_errors_are_redis_cluster_exceptions(
    pair: Any, action: Callable[[Client], Any]
) -> None:
    for client in pair:
        with pytest.raises(RedisClusterException):
            action(client)


def test_constructed_like_redis_cluster(compat_cluster: LocalCluster) -> None:
    host, port = compat_cluster.seed.rsplit(":", 1)
    for kwargs in (
        {"host": host, "port": int(port)},
        {"startup_nodes": [ClusterNode(host, int(port))]},
        {"host": host, "port": int(port), "read_from_replicas": True},
    ):
        with ClusterClient(**kwargs) as c:
            c.set("ctor", 1)
            assert c.get("ctor") == b"1"
            assert c.get_default_node().name == compat_cluster.seed
    with ClusterClient(host=host, port=int(port), read_from_replicas=True) as c:
        assert c.read_from == "any"  # RedisCluster's round robin over primary and replicas


def test_set_response_callback(pair: Any) -> None:
    def run(c: Client) -> Any:
        c.set_response_callback("GET", lambda reply, **_: ("parsed", reply))
        try:
            c.set("cb", "v")
            return c.get("cb")
        finally:
            c.set_response_callback("GET", lambda reply, **_: reply)

    assert same(pair, run) == ("parsed", b"v")


def test_raw_execute_command_forms(pair: Any) -> None:
    """Lower-case names, split sub-commands and numeric arguments route like the
    methods do (the key lookup never trips over a number)."""
    ours, theirs = pair
    theirs.flushall()
    ours.set("a", 1)
    slot = ours.keyslot("a")
    cursors, keys = ours.execute_command("scan", 0, "COUNT", 1000)
    assert sorted(cursors) == names(theirs.get_primaries()) and keys == [b"a"]
    assert ours.execute_command("cluster", "countkeysinslot", slot) == 1
    assert ours.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 1
    assert ours.execute_command("ECHO", 5) == b"5"
    assert ours.execute_command("config", "get", "maxmemory") == {b"maxmemory": b"0"}
    assert ours.execute_command("OBJECT", "ENCODING", "a") == b"int"
