"""The controller's one HTTP port: health, readiness, metrics, status and routing.

prometheus-client's own WSGI app answers on any path, so the routing is ours: a small
WSGI app in front, served by wsgiref with a thread per request. A handler that raises
answers 500 and is logged; it never stops the server.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST

from controller.metrics import ControllerMetrics
from controller.routing import RoutingTable

__all__ = ["ControllerHTTPServer"]

log = logging.getLogger("slotpilot.http")
StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class ControllerHTTPServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: ControllerMetrics,
        ready: Callable[[], bool],
        status: Callable[[], dict[str, Any]],
        routing: Callable[[], RoutingTable | None],
    ) -> None:
        self.metrics, self._ready, self._status, self._routing = metrics, ready, status, routing
        self.host = host
        self._server = make_server(host, port, self.app, _ThreadingServer, _QuietHandler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ControllerHTTPServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slotpilot-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def app(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start)
        except Exception:
            log.exception("handler failed for %s", environ.get("PATH_INFO"))
            return _json(start, "500 Internal Server Error", {"error": "internal error"})

    def _route(self, environ: dict[str, Any], start: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        routes = {"/healthz", "/readyz", "/metrics", "/v1/status", "/v1/routing"}
        if path not in routes:
            return _json(start, "404 Not Found", {"error": f"no such path {path}"})
        if environ.get("REQUEST_METHOD") != "GET":
            return _json(start, "405 Method Not Allowed", {"error": "GET only"})
        if path == "/healthz":
            start("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            if self._ready():
                start("200 OK", [("Content-Type", "text/plain")])
                return [b"ready\n"]
            return _json(
                start, "503 Service Unavailable", {"ready": False, "reason": "no probe cycle yet"}
            )
        if path == "/metrics":
            start("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [self.metrics.render()]
        if path == "/v1/status":
            return _json(start, "200 OK", self._status())
        table = self._routing()
        if table is None:
            return _json(start, "503 Service Unavailable", {"error": "no routing table yet"})
        headers = [("ETag", table.etag), ("Cache-Control", "no-cache")]
        if environ.get("HTTP_IF_NONE_MATCH") == table.etag:
            start("304 Not Modified", headers)
            return [b""]
        return _json(start, "200 OK", table.to_json(), headers)


def _json(
    start: StartResponse, status: str, body: Any, headers: list[tuple[str, str]] | None = None
) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    start(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *(headers or []),
        ],
    )
    return [data]
