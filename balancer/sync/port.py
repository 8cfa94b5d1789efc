"""What the sync pipeline, transaction and pub/sub may use of their
:class:`~balancer.sync.client.ClusterClient` (see :mod:`balancer.core.port`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from balancer.core.port import ClientPort
from balancer.core.routes import Route, RouteTable
from balancer.sync.transport import NodeTransport

__all__ = ["SyncClientPort"]


class SyncClientPort(ClientPort, Protocol):
    """:class:`~balancer.core.port.ClientPort` and the sync client's own members."""

    _tls: bool

    @property
    def _table(self) -> RouteTable[NodeTransport]: ...

    @property
    def _slot_route(self) -> list[Route[NodeTransport] | None]: ...

    def execute_command(self, *args: Any, **options: Any) -> Any: ...

    def _load_script(self, args: Sequence[Any]) -> bool: ...

    def _maybe_refresh(self, force: bool = False, deadline: float | None = None) -> None: ...

    def _wait_or_raise(self, deadline: float, exc: BaseException, attempt: int = 1) -> float: ...

    def close(self) -> None: ...
