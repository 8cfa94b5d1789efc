"""The asyncio client's picture of the cluster: nodes, routes, the slot map and what
decides where reads go (``read_from``, the controller's routing table, stale replicas).

The sync client's rules, awaited: ``CLUSTER SHARDS`` is re-read from the first node whose
view covers at least as many slots as the map in use; one refresh is in flight at a time
and at most one starts per ``_REFRESH_GAP`` (doubling while they fail), whatever asks
for it. Mixed into :class:`~balancer.aio.client.AsyncClusterClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import redis

from balancer.aio.pubsub import AsyncPubSubNodes
from balancer.aio.transport import AsyncNodeTransport, AsyncTransportOptions
from balancer.core.errors import ClusterError
from balancer.core.freshness import info_fields, replica_is_fresh
from balancer.core.routes import ClientStats, Route, RouteTable
from balancer.core.slots import SlotMap
from balancer.follow import RoutingFollower

__all__ = ["AsyncTopology", "Route"]

NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class AsyncTopology:
    """Nodes, routes and the slot map of an :class:`AsyncClusterClient`: a
    :class:`~balancer.core.routes.RouteTable` fed by awaited reads."""

    stats: ClientStats
    _table: RouteTable[AsyncNodeTransport]
    _options: AsyncTransportOptions
    _max_connections: int
    _max_replica_lag: float | None
    _replica_check_interval: float
    _routing_interval: float
    _refreshing: bool
    _pubsub_nodes: AsyncPubSubNodes | None

    def _connect(self, host: str, port: int) -> AsyncNodeTransport:
        return AsyncNodeTransport(host, port, self._options, self._max_connections)

    async def _routing_loop(self, url: str) -> None:
        """The sync client's follower, its blocking poll run in a worker thread; tables
        are applied on this loop."""
        loop = asyncio.get_running_loop()

        def apply(table: Mapping[str, Any]) -> None:
            loop.call_soon_threadsafe(self._table.apply_routing, table)

        follower = RoutingFollower(url, apply, self._routing_interval)
        while True:
            await asyncio.to_thread(follower.poll)
            await asyncio.sleep(self._routing_interval)

    async def check_replicas(self) -> frozenset[str]:
        """One round of ``INFO replication`` over every replica (see
        :func:`balancer.core.freshness.replica_is_fresh`); returns the stale set."""
        assert self._max_replica_lag is not None
        stale: set[str] = set()
        for address in self._table.replica_addresses():
            try:
                raw = await self._table.transport(address).execute(("INFO", "replication"))
                fresh = replica_is_fresh(info_fields(raw), self._max_replica_lag)
            except (redis.RedisError, OSError, ValueError):
                continue  # a dead or odd node: the breakers handle it
            if fresh is False:
                stale.add(address)
        result = frozenset(stale)
        self._table.set_stale(result)
        return result

    async def _replica_loop(self) -> None:
        while True:
            await asyncio.sleep(self._replica_check_interval)
            await self.check_replicas()

    async def refresh_topology(self) -> SlotMap:
        """Re-read ``CLUSTER SHARDS`` from a reachable node and swap in the new routes."""
        while self._refreshing:
            await asyncio.sleep(0.005)
        return await self._refresh(None)

    async def _refresh(self, deadline: float | None) -> SlotMap:
        table = self._table
        self._refreshing = True
        vote = table.refresh_started(time.monotonic())
        try:
            async for reply, host in self._answers(("CLUSTER", "SHARDS"), deadline, vote.errors):
                if vote.offer(reply, host):
                    break
            slot_map = vote.result()
        except (ClusterError, ValueError):
            table.refresh_failed()
            raise
        finally:
            self._refreshing = False
        if table.install(slot_map, time.monotonic()) and self._pubsub_nodes is not None:
            await self._pubsub_nodes.slots_changed()  # sharded subscribers follow
        return slot_map

    async def _answers(
        self, args: Sequence[Any], deadline: float | None, errors: list[str]
    ) -> AsyncIterator[tuple[Any, str]]:
        """Replies to ``args`` node by node (healthy known nodes first, then the seeds)
        while the caller asks for more and ``deadline`` allows."""
        for address in self._table.ask_order():
            if deadline is not None and errors and time.monotonic() >= deadline:
                return
            transport = self._table.transport(address)
            try:
                reply = await transport.execute(args)
            except NETWORK_ERRORS as exc:
                self._table.node_failed(address, exc)
                errors.append(f"{address}: {exc}")
                continue
            except redis.ResponseError as exc:
                errors.append(f"{address}: {exc}")
                continue
            yield reply, transport.host

    async def _ask_any(self, args: Sequence[Any], deadline: float | None = None) -> tuple[Any, str]:
        """(reply, host) from the first node that answers ``args``."""
        errors: list[str] = []
        async for reply, host in self._answers(args, deadline, errors):
            return reply, host
        raise ClusterError(f"no node answered {args[0]!r}: {'; '.join(errors[:5])}")

    async def _maybe_refresh(self, force: bool = False, deadline: float | None = None) -> None:
        """Refresh if due (or ``force``), never raising; one refresh in flight (see
        :meth:`RouteTable.refresh_due`)."""
        if not self._table.refresh_due(time.monotonic(), force) or self._refreshing:
            return  # another task is refreshing; its result serves this call too
        with contextlib.suppress(ClusterError, ValueError):
            await self._refresh(deadline)
