"""What a ``slotpilot`` command can fail with, and the one mapping from errors to exit codes.

A user mistake must end in a message, never a traceback: bad input exits 2 naming the
flag or field, an unreachable cluster or a failed step exits 1 with the address and the
reason, and a refusal (a gate, or another live holder of the cluster's lease) exits 3.
Anything else is a bug: it is reported in one line too, with the traceback shown at
``--log-level debug``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

__all__ = [
    "BrokenEnvironment",
    "BadInput",
    "CommandError",
    "Unreachable",
    "cause",
    "exit_code",
    "interrupt_on_sigterm",
]


class CommandError(Exception):
    """A command could not do its job; ``code`` is the exit status, the text says why."""

    code = 1


class BadInput(CommandError):
    """A flag or config field has a value the command cannot use (exit 2)."""

    code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class BrokenEnvironment(CommandError):
    """The installed dependencies cannot work (exit 1): one message, before anything runs."""

    def __init__(self, message: str) -> None:
        super().__init__(f"broken environment: {message}")


class Unreachable(CommandError):
    """No node (or controller) answered at the given address(es) (exit 1)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot reach {address}: {reason}")
        self.address, self.reason = address, reason


_CAUSES = (
    ("connection refused", "connection refused (nothing listens there)"),
    ("timeout connecting", "timed out connecting"),
    ("timed out", "timed out"),
    ("timeout", "timed out"),
    ("name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("temporary failure in name resolution", "unknown host (DNS)"),
    ("without any password configured", "the server has no password, but one was given: "
     "drop it ($REDISCLI_AUTH, cluster.password_env)"),
    ("no password is set", "the server has no password, but one was given: drop it "
     "($REDISCLI_AUTH, cluster.password_env)"),
    ("wrongpass", "authentication failed: wrong user or password"),
    ("invalid username-password", "authentication failed: wrong user or password"),
    ("authentication required", "authentication required: give the password "
     "($REDISCLI_AUTH, cluster.password_env)"),
    ("noauth", "authentication required: give the password ($REDISCLI_AUTH, "
     "cluster.password_env)"),
    ("certificate verify failed", "TLS: certificate verify failed (wrong CA or hostname?)"),
    ("wrong version number", "TLS: the server does not speak TLS there (or speaks only TLS)"),
    ("connection reset by peer", "connection reset (a TLS port spoken to in plain text?)"),
)  # fmt: skip


def cause(exc: BaseException) -> str:
    """Why a connection failed, in a few words and without the address (the caller names
    it once): refused, timed out, unknown host, TLS, authentication — else the error's
    own text."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:  # the error and what caused it
        seen.append(current)
        current = current.__cause__ or getattr(current, "reason", None)
        if not isinstance(current, BaseException):
            current = None
    for error in seen:
        text = str(error).lower()
        for marker, said in _CAUSES:
            if marker in text:
                return said
        if isinstance(error, TimeoutError):
            return "timed out"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused (nothing listens there)"
    text = str(exc)
    return text or type(exc).__name__


def exit_code(exc: Exception, command: str) -> int:
    """Print why ``command`` stopped (stderr) and return its exit code."""
    import redis

    from balancer import ClusterError
    from controller.config import ConfigError
    from controller.lease import LeaseHeld
    from controller.migration import MigrationError
    from controller.platform.local_nodes import ClusterStartError
    from controller.topology import ClusterNotStable

    if isinstance(exc, CommandError):
        print(str(exc), file=sys.stderr)
        return exc.code
    if isinstance(exc, ConfigError):
        for where, message in exc.problems:
            print(f"{where}: {message}", file=sys.stderr)
        return 2
    if isinstance(exc, ClusterNotStable | LeaseHeld):
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    known = (redis.RedisError, ClusterError, ClusterStartError, MigrationError, OSError)
    if isinstance(exc, known):
        print(f"{command} failed: {exc}", file=sys.stderr)
        return 1
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        raise exc
    print(f"{command} failed: {type(exc).__name__}: {exc} "
          "(--log-level debug shows where)", file=sys.stderr)  # fmt: skip
    return 1


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """SIGTERM stops a command the way Ctrl-C does (``KeyboardInterrupt``), so it leaves
    through its cleanup: the cluster's lease is released at once instead of expiring."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
