"""What the asyncio pipeline, transaction and pub/sub may use of their
:class:`~balancer.aio.client.AsyncClusterClient` (see :mod:`balancer.core.port`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from balancer.aio.transport import AsyncNodeTransport, AsyncTransportOptions
from balancer.core.port import ClientPort
from balancer.core.routes import Route, RouteTable

__all__ = ["AsyncClientPort"]


class AsyncClientPort(ClientPort, Protocol):
    """:class:`~balancer.core.port.ClientPort` and the asyncio client's own members."""

    _ready: bool
    _options: AsyncTransportOptions

    @property
    def _table(self) -> RouteTable[AsyncNodeTransport]: ...

    @property
    def _slot_route(self) -> list[Route[AsyncNodeTransport] | None]: ...

    async def execute_command(self, *args: Any, **options: Any) -> Any: ...

    async def initialize(self) -> Any: ...

    async def _keys(self, args: Sequence[Any]) -> list[Any]: ...

    async def _load_script(self, args: Sequence[Any]) -> bool: ...

    async def _wait_or_raise(
        self, deadline: float, exc: BaseException, attempt: int = 1
    ) -> float: ...

    async def _primary_unavailable(
        self, slot: int, route: Route[AsyncNodeTransport], deadline: float
    ) -> float: ...
