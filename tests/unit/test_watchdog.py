"""The reconcile watchdog, from values and a clock; and what /healthz answers with it."""

from __future__ import annotations

from wsgiref.util import setup_testing_defaults

from controller.http import ControllerHTTPServer
from controller.metrics import ControllerMetrics
from controller.watchdog import stall_limit, stalled


def test_stall_limit_counts_intervals_plus_a_running_reshards_wait() -> None:
    assert stall_limit(2.0, 15) == 30.0
    assert stall_limit(2.0, 15, reshard_wait=600.0) == 630.0


def test_stalled_after_the_limit_only() -> None:
    assert stalled(100.0, 130.0, 30.0) is None
    reason = stalled(100.0, 130.5, 30.0)
    assert reason is not None and "no reconcile progress for 30s" in reason


def _get(server: ControllerHTTPServer, path: str) -> tuple[str, bytes]:
    environ: dict[str, object] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    seen: list[str] = []
    body = b"".join(server.app(environ, lambda status, headers: seen.append(status)))  # type: ignore[arg-type,return-value]
    return seen[0], body


def test_healthz_fails_with_the_reason_while_stalled() -> None:
    reason: list[str | None] = [None]
    server = ControllerHTTPServer(
        "127.0.0.1", 0, metrics=ControllerMetrics(), ready=lambda: True, status=dict,
        routing=lambda: None, stall_reason=lambda: reason[0],
    )  # fmt: skip
    try:
        assert _get(server, "/healthz") == ("200 OK", b"ok\n")
        reason[0] = "no reconcile progress for 31s (limit 30s): the loop is stuck"
        status, body = _get(server, "/healthz")
        assert status.startswith("503") and b"no reconcile progress" in body
    finally:
        server.stop()
