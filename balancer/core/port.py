"""What pipelines, transactions and pub/sub may use of their client: the seam between a
client and its helpers, declared once so a helper depends on it, not on the client class
(and no import cycle is needed to type it). Each driver extends it with its I/O members
(:mod:`balancer.sync.port`, :mod:`balancer.aio.port`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from redis.cluster import ClusterNode

from balancer.core.breaker import NodeBreaker
from balancer.core.keys import KeyLocator
from balancer.core.nodes import NodeDirectory
from balancer.core.routes import ClientStats

__all__ = ["ClientPort"]


class ClientPort(Protocol):
    """The members of :class:`~balancer.core.client.ClientCore` a helper may call."""

    stats: ClientStats
    max_redirects: int
    encoder: Any

    @property
    def _locator(self) -> KeyLocator: ...

    @property
    def _directory(self) -> NodeDirectory: ...

    def _slot_of(self, name: str, keys: Sequence[Any]) -> int: ...

    def _parse(self, name: str, raw: Any, options: dict[str, Any]) -> Any: ...

    def _moved(self, slot: int, exc: Any) -> None: ...

    def _breaker(self, address: str) -> NodeBreaker: ...

    def get_connection_kwargs(self) -> dict[str, Any]: ...

    def get_nodes(self) -> list[ClusterNode]: ...

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> ClusterNode | None: ...

    def get_node_from_key(self, key: Any, replica: bool = False) -> ClusterNode | None: ...

    def keyslot(self, key: Any) -> int: ...
