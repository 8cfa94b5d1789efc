"""The controller's HTTP port over real HTTP: every route, then a real cluster behind it."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from controller.health import Capacity, ClusterView, build_view
from controller.http import ControllerHTTPServer
from controller.localcluster import LocalCluster
from controller.metrics import ControllerMetrics
from controller.probe import Probe
from controller.routing import RoutingTable, build_routing_table
from tests.unit.test_routing import view_with


@dataclass
class Published:
    """What the lead's controller would hand the server: read on every request."""

    ready: bool = False
    table: RoutingTable | None = None
    status: dict[str, Any] = field(default_factory=dict)
    view: ClusterView | None = None
    fail: bool = False
    release: threading.Event | None = None

    def get_status(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("status exploded")
        if self.release is not None:
            self.release.wait(10)
        return self.status


def serve(state: Published, metrics: ControllerMetrics | None = None) -> ControllerHTTPServer:
    return ControllerHTTPServer(
        "127.0.0.1", 0, metrics=metrics or ControllerMetrics(), ready=lambda: state.ready,
        status=state.get_status, routing=lambda: state.table,
    ).start()  # fmt: skip


@pytest.fixture
def state() -> Published:
    return Published()


@pytest.fixture
def server(state: Published) -> Iterator[ControllerHTTPServer]:
    server = serve(state)
    yield server
    server.stop()


def get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_healthz_always_and_readyz_once_ready(
    server: ControllerHTTPServer, state: Published
) -> None:
    assert get(f"{server.url}/healthz")[::2] == (200, b"ok\n")
    status, headers, body = get(f"{server.url}/readyz")
    assert status == 503 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["ready"] is False and "reached a node" in json.loads(body)["reason"]
    state.ready = True
    assert get(f"{server.url}/readyz")[0] == 200
    assert get(f"{server.url}/healthz")[0] == 200


def test_metrics_exposition(state: Published) -> None:
    metrics = ControllerMetrics()
    metrics.set_leader(True)
    metrics.observe_view(view_with())
    with serve(state, metrics) as server:
        status, headers, body = get(f"{server.url}/metrics")
    assert status == 200 and headers["Content-Type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["slotpilot_leader"].samples[0].value == 1
    assert len(families["slotpilot_node_up"].samples) == 3


def test_status_is_json_with_unserializable_values_as_strings(
    server: ControllerHTTPServer, state: Published
) -> None:
    state.status = {"ready": True, "config": Path("/etc/slotpilot.yaml"), "gates": []}
    status, headers, body = get(f"{server.url}/v1/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"ready": True, "config": "/etc/slotpilot.yaml", "gates": []}


def test_routing_table_etag_and_304(server: ControllerHTTPServer, state: Published) -> None:
    url = f"{server.url}/v1/routing"
    status, _, body = get(url)
    assert status == 503 and "no routing table" in json.loads(body)["error"]

    state.table = first = build_routing_table(view_with())
    status, headers, body = get(url)
    assert status == 200 and json.loads(body) == first.to_json()
    assert headers["ETag"] == first.etag and headers["Cache-Control"] == "no-cache"
    status, headers, body = get(url, {"If-None-Match": first.etag})
    assert (status, body, headers["ETag"]) == (304, b"", first.etag)
    assert get(url, {"If-None-Match": f'"0-stale", W/{first.etag}'})[0] == 304
    assert get(url, {"If-None-Match": '"0-stale"'})[0] == 200

    state.table = build_routing_table(view_with(down="127.0.0.1:7001"), previous=first)
    status, headers, body = get(url, {"If-None-Match": first.etag})
    assert status == 200 and headers["ETag"] == state.table.etag != first.etag
    assert json.loads(body)["version"] == 2


def test_unknown_paths_and_methods(server: ControllerHTTPServer) -> None:
    status, headers, body = get(f"{server.url}/nope%3Cscript%3E")
    assert status == 404 and json.loads(body) == {"error": "not found"}  # path not echoed
    assert get(f"{server.url}/metrics/extra")[0] == 404  # not prometheus' answer-anything app
    status, headers, body = get(f"{server.url}/v1/status", method="POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert "GET or HEAD" in json.loads(body)["error"]
    assert get(f"{server.url}/healthz", method="DELETE")[0] == 405


def test_head_answers_what_get_does_without_a_body(
    server: ControllerHTTPServer, state: Published
) -> None:
    state.status = {"ready": True}
    for ready in (False, True):
        state.ready = ready
        state.table = build_routing_table(view_with()) if ready else None
        for path in ("/healthz", "/readyz", "/metrics", "/v1/status", "/v1/routing", "/nope"):
            got_status, got_headers, got_body = get(f"{server.url}{path}")
            status, headers, body = get(f"{server.url}{path}", method="HEAD")
            assert (status, body) == (got_status, b""), path
            assert headers["Content-Type"] == got_headers["Content-Type"], path
            if path != "/metrics":  # the metrics body changes between two scrapes
                assert headers["Content-Length"] == str(len(got_body)), path
    etag = get(f"{server.url}/v1/routing")[1]["ETag"]
    assert get(f"{server.url}/v1/routing", {"If-None-Match": etag}, method="HEAD")[0] == 304


def _raw_connection(server: ControllerHTTPServer) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return conn


def test_an_idle_connection_is_closed_after_the_request_timeout(state: Published) -> None:
    server = ControllerHTTPServer(
        "127.0.0.1", 0, metrics=ControllerMetrics(), ready=lambda: state.ready,
        status=state.get_status, routing=lambda: state.table, request_timeout=0.3,
    ).start()  # fmt: skip
    try:
        with _raw_connection(server) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\n")  # ...and never the rest
            started = time.monotonic()
            try:
                closed = idle.recv(100) == b""
            except ConnectionResetError:
                closed = True
            assert closed and time.monotonic() - started < 4
        assert get(f"{server.url}/healthz")[0] == 200
    finally:
        server.stop()


def test_worker_threads_are_bounded_and_freed(state: Published) -> None:
    server = ControllerHTTPServer(
        "127.0.0.1", 0, metrics=ControllerMetrics(), ready=lambda: state.ready,
        status=state.get_status, routing=lambda: state.table, max_workers=2,
    ).start()  # fmt: skip
    threads_before = threading.active_count()
    try:
        idle = [_raw_connection(server) for _ in range(2)]  # hold both workers
        time.sleep(0.2)
        status, headers, body = get(f"{server.url}/healthz")
        assert status == 503 and json.loads(body) == {"error": "server busy"}
        assert headers["Retry-After"] == "1"
        assert threading.active_count() <= threads_before + 2
        for conn in idle:
            conn.close()
        deadline = time.monotonic() + 5
        while get(f"{server.url}/healthz")[0] != 200:
            assert time.monotonic() < deadline, "workers were not freed"
            time.sleep(0.05)
    finally:
        server.stop()


def test_a_failing_handler_answers_500_and_the_server_lives_on(
    server: ControllerHTTPServer, state: Published, caplog: pytest.LogCaptureFixture
) -> None:
    state.fail = True
    with caplog.at_level(logging.ERROR, logger="slotpilot.http"):
        status, _, body = get(f"{server.url}/v1/status")
    assert status == 500 and json.loads(body) == {"error": "internal error"}
    assert "GET /v1/status failed" in caplog.text and "status exploded" in caplog.text
    state.fail = False
    assert get(f"{server.url}/v1/status")[0] == 200


def test_a_slow_request_does_not_block_others(
    server: ControllerHTTPServer, state: Published
) -> None:
    state.release = threading.Event()
    slow: list[int] = []
    waiter = threading.Thread(target=lambda: slow.append(get(f"{server.url}/v1/status")[0]))
    waiter.start()
    try:
        assert get(f"{server.url}/healthz")[0] == 200  # answered while /v1/status waits
        assert not slow
    finally:
        state.release.set()
        waiter.join(10)
    assert slow == [200]


def test_port_zero_url_and_stop(state: Published) -> None:
    one, two = serve(state), serve(state)
    try:
        assert one.port != two.port and one.port > 0
        assert one.url == f"http://127.0.0.1:{one.port}"
    finally:
        one.stop()
        two.stop()
    one.stop()  # twice is fine
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{one.url}/healthz", timeout=2)


def scrape_node_up(url: str) -> dict[str, float]:
    body = get(f"{url}/metrics")[2].decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    return {s.labels["node"]: s.value for s in families["slotpilot_node_up"].samples}


def routing_by_address(url: str) -> tuple[dict[str, Any], str, dict[str, dict[str, Any]]]:
    status, headers, body = get(f"{url}/v1/routing")
    assert status == 200
    table = json.loads(body)
    return table, headers["ETag"], {n["address"]: n for n in table["nodes"]}


@pytest.mark.integration
def test_real_cluster_probe_to_metrics_and_routing(cluster: LocalCluster) -> None:
    state = Published()
    metrics = ControllerMetrics()
    probe = Probe([cluster.seed], timeout=0.5)

    def cycle() -> None:
        result = probe.run()
        view = build_view(result, state.view, Capacity(), rise=2, fall=3, now=time.monotonic())
        state.view, state.table = view, build_routing_table(view, previous=state.table)
        metrics.observe_probe(result)
        metrics.observe_view(view)
        metrics.observe_breakers({a: probe.breaker(a).state for a in view.nodes})
        state.ready = True

    server = serve(state, metrics)
    try:
        assert get(f"{server.url}/readyz")[0] == 503
        cycle()
        cycle()  # rise=2: up after two good probes
        assert get(f"{server.url}/readyz")[0] == 200
        node_up = scrape_node_up(server.url)
        assert len(node_up) == 6 and set(node_up.values()) == {1}
        before, etag_before, nodes = routing_by_address(server.url)
        assert len(nodes) == 6 and {n["state"] for n in nodes.values()} == {"up"}

        victim = cluster.shard_map()[0][1][0]
        victim.kill()
        for _ in range(3):  # fall=3
            cycle()
        after, etag_after, nodes = routing_by_address(server.url)
        assert after["version"] > before["version"] and etag_after != etag_before
        assert (nodes[victim.address]["state"], nodes[victim.address]["weight"]) == ("down", 0.0)
        assert {n["state"] for a, n in nodes.items() if a != victim.address} == {"up"}
        node_up = scrape_node_up(server.url)
        assert node_up.pop(victim.address) == 0 and set(node_up.values()) == {1}
        assert get(f"{server.url}/v1/routing", {"If-None-Match": etag_before})[0] == 200
        assert get(f"{server.url}/v1/routing", {"If-None-Match": etag_after})[0] == 304
    finally:
        server.stop()
        probe.close()
