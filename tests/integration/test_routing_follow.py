"""The SDK follows a routing table served over real HTTP: draining nodes stop getting reads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from redis.crc import key_slot

from balancer import ClusterClient
from controller.localcluster import LocalCluster


class TableServer:
    """Serves ``table`` at /v1/routing with an ETag; counts 200s and 304s."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = {"version": 1, "nodes": []}
        self.ok = 0
        self.not_modified = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                etag = f'"{owner.table["version"]}"'
                if self.headers.get("If-None-Match") == etag:
                    owner.not_modified += 1
                    self.send_response(304)
                    self.end_headers()
                    return
                body = json.dumps(owner.table).encode()
                owner.ok += 1
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/routing"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, nodes: list[dict[str, Any]]) -> None:
        self.table = {"version": self.table["version"] + 1, "nodes": nodes}


@pytest.fixture
def table_server() -> Iterator[TableServer]:
    server = TableServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _gets(node: Any) -> int:
    return int(node.client().info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_draining_replica_stops_receiving_reads(
    cluster: LocalCluster, table_server: TableServer
) -> None:
    primary, replicas = cluster.shard_map()[0]
    replica = replicas[0]
    owned = {
        s
        for r in primary.client().execute_command("CLUSTER", "SLOTS")
        if r[2][1] == primary.port
        for s in range(r[0], r[1] + 1)
    }
    keys = [k for k in (f"r:{i}" for i in range(2000)) if key_slot(k.encode()) in owned][:50]
    client = ClusterClient(
        cluster.seed, read_from="replicas", routing_url=table_server.url, routing_interval=0.1
    )
    client.mset({k: k for k in keys})
    before = _gets(replica)
    for k in keys:
        assert client.get(k) == k.encode()
    assert _gets(replica) - before == len(keys)  # replica serves the shard's reads

    table_server.publish([
        {"address": replica.address, "state": "draining", "weight": 0},
        {"address": primary.address, "state": "up", "weight": 1},
    ])  # fmt: skip
    deadline = time.monotonic() + 10
    while (
        client._follower is not None and client._follower.version != table_server.table["version"]
    ):
        assert time.monotonic() < deadline, "the table was never applied"
        time.sleep(0.05)
    before_replica, before_primary = _gets(replica), _gets(primary)
    for k in keys:
        assert client.get(k) == k.encode()
    assert _gets(replica) == before_replica
    assert _gets(primary) - before_primary == len(keys)
    time.sleep(0.5)
    assert table_server.not_modified >= 2  # unchanged table: conditional GETs answered 304
    client.close()


def test_unreachable_routing_url_keeps_routing_working(cluster: LocalCluster) -> None:
    with ClusterClient(
        cluster.seed, read_from="replicas", routing_url="http://127.0.0.1:9/v1/routing",
        routing_interval=0.1,
    ) as client:  # fmt: skip
        client.set("x", "1")
        time.sleep(0.3)
        assert client.get("x") == b"1"
        assert client._follower is not None and client._follower.errors >= 2


def test_malformed_tables_never_stop_the_follower(
    cluster: LocalCluster, table_server: TableServer
) -> None:
    client = ClusterClient(
        cluster.seed, read_from="replicas", routing_url=table_server.url, routing_interval=0.05
    )
    follower = client._follower
    assert follower is not None
    client.set("x", "1")
    malformed: list[Any] = [
        [1, "x", None, {"address": 5, "state": []}],  # rows of every wrong shape
        "not a list",
        {"address": "127.0.0.1:1"},
    ]
    for version, nodes in enumerate(malformed, start=10):
        table_server.table = {"version": version, "nodes": nodes}
        errors = follower.errors
        deadline = time.monotonic() + 5
        while follower.errors == errors and follower.version != version:
            assert time.monotonic() < deadline, "the follower stopped polling"
            time.sleep(0.02)
    assert client.get("x") == b"1"
    assert follower._thread is not None and follower._thread.is_alive()
    _, (replica,) = cluster.shard_map()[0]
    table_server.publish([{"address": replica.address, "state": "draining", "weight": 0}])
    deadline = time.monotonic() + 5
    while follower.version != table_server.table["version"]:
        assert time.monotonic() < deadline, "a good table after bad ones was never applied"
        time.sleep(0.02)
    client.close()
