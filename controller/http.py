"""The controller's one HTTP port: health, readiness, metrics, status and routing.

prometheus-client's own WSGI app answers on any path, so the routing is ours: a small
WSGI app in front of the metrics registry, served by the stdlib's wsgiref with a thread
per connection (no extra dependency, and a slow scraper cannot hold up a probe). The
threads are bounded (``max_workers``; a connection beyond them gets a 503 at once) and
every connection has a socket timeout (``request_timeout``), so idle or trickling
clients can neither pile up threads nor hold one forever. Every response is built in
full before ``start_response`` is called, so a handler that raises still gets a clean
500 and is logged; it never stops the server. HEAD answers what GET would, without the
body. Request lines are logged at debug level only: Prometheus and kubelet probes would
flood the log otherwise. Error bodies never echo the request (a 404 says "not found").
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CONTENT_TYPE_LATEST

from controller.metrics import ControllerMetrics
from controller.routing import RoutingTable

__all__ = ["ControllerHTTPServer"]

log = logging.getLogger("slotpilot.http")


@dataclass(frozen=True)
class _Response:
    status: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: str, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    data = json.dumps(body, default=str).encode()
    return _Response(status, data, (("Content-Type", "application/json"), *headers))


def _text(status: str, body: str) -> _Response:
    return _Response(status, body.encode(), (("Content-Type", "text/plain; charset=utf-8"),))


def _etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` may list several tags, weak ones (``W/``) or ``*``."""
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 26\r\n\r\n"
    b'{"error": "server busy"}\r\n'
)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most ``max_workers`` at once."""

    daemon_threads = True  # a hung client must not keep the process alive
    block_on_close = False  # nor make stop() wait for it
    request_timeout: float = 10.0
    workers: threading.BoundedSemaphore = threading.BoundedSemaphore(16)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.workers.acquire(blocking=False):
            log.debug("connection from %s refused: %s busy", client_address, "all workers")
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: its slot is free again
            self.workers.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.workers.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(getattr(self.server, "request_timeout", None))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class ControllerHTTPServer:
    """Serves ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/status`` and ``/v1/routing``.

    ``/healthz`` answers 503 with the reason while ``stall_reason`` names one (a wedged
    reconcile loop: the kubelet restarts the pod), else 200.

    The socket is bound at construction, so :attr:`port` is known (port 0 picks a free
    one) before :meth:`start` serves it from a daemon thread; binding errors (a port in
    use, an unknown host) are ``OSError`` from the constructor. The callables are read on
    every request; they must be cheap and thread-safe.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: ControllerMetrics,
        ready: Callable[[], bool],
        status: Callable[[], dict[str, Any]],
        routing: Callable[[], RoutingTable | None],
        not_ready_reason: Callable[[], str] | None = None,
        stall_reason: Callable[[], str | None] | None = None,
        request_timeout: float = 10.0,
        max_workers: int = 16,
    ) -> None:
        if request_timeout <= 0 or max_workers < 1:
            raise ValueError("request_timeout must be > 0 and max_workers >= 1")
        self.host = host
        self.metrics = metrics
        self._ready, self._status, self._routing = ready, status, routing
        self._why_not_ready = not_ready_reason or (lambda: "no probe cycle has reached a node yet")
        self._stall_reason = stall_reason or (lambda: None)
        server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
        self._server = make_server(host, port, self.app, server_class, _QuietHandler)
        assert isinstance(self._server, _ThreadingWSGIServer)
        self._server.request_timeout = request_timeout
        self._server.workers = threading.BoundedSemaphore(max_workers)
        self._thread: threading.Thread | None = None
        self._routes: dict[str, Callable[[WSGIEnvironment], _Response]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/v1/status": lambda _: _json("200 OK", self._status()),
            "/v1/routing": self._routing_table,
        }

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ControllerHTTPServer:
        """Serve in a daemon thread; returns self so it chains onto the constructor."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="slotpilot-http", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice or before start."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ControllerHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- WSGI ----------------------------------------------------------------------------

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI entry point (usable under any WSGI server, e.g. in tests)."""
        try:
            response = self._respond(environ)
        except Exception:
            log.exception("%s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            response = _json("500 Internal Server Error", {"error": "internal error"})
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        start_response(response.status, headers)
        # HEAD: what GET would answer, its Content-Length included, without the body
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else response.body]

    def _respond(self, environ: WSGIEnvironment) -> _Response:
        path = str(environ.get("PATH_INFO") or "/")
        handler = self._routes.get(path)
        if handler is None:
            return _json("404 Not Found", {"error": "not found"})
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _json(
                "405 Method Not Allowed",
                {"error": "method not allowed; use GET or HEAD"},
                (("Allow", "GET, HEAD"),),
            )
        return handler(environ)

    def _healthz(self, environ: WSGIEnvironment) -> _Response:
        stuck = self._stall_reason()
        if stuck is None:
            return _text("200 OK", "ok\n")
        return _json("503 Service Unavailable", {"alive": False, "reason": stuck})

    def _readyz(self, environ: WSGIEnvironment) -> _Response:
        if self._ready():
            return _text("200 OK", "ready\n")
        return _json("503 Service Unavailable", {"ready": False, "reason": self._why_not_ready()})

    def _metrics(self, environ: WSGIEnvironment) -> _Response:
        return _Response("200 OK", self.metrics.render(), (("Content-Type", CONTENT_TYPE_LATEST),))

    def _routing_table(self, environ: WSGIEnvironment) -> _Response:
        table = self._routing()
        if table is None:
            return _json("503 Service Unavailable", {"error": "no routing table published yet"})
        etag = table.etag
        headers = (("ETag", etag), ("Cache-Control", "no-cache"))
        if _etag_matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
            return _Response("304 Not Modified", b"", headers)
        return _json("200 OK", table.to_json(), headers)
