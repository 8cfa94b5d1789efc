"""The asyncio client: :class:`AsyncClusterClient` over ``redis.asyncio`` connections."""

from balancer.aio.client import AsyncClusterClient
from balancer.aio.pipeline import AsyncClusterPipeline

__all__ = ["AsyncClusterClient", "AsyncClusterPipeline"]
