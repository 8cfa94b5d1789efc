"""The threaded client: :class:`ClusterClient`, a thin driver over :mod:`balancer.core`
with redis-py ``Connection`` objects as its transport."""

from balancer.sync.client import ClusterClient
from balancer.sync.pipeline import ClusterPipeline
from balancer.sync.transaction import ClusterTransaction

__all__ = ["ClusterClient", "ClusterPipeline", "ClusterTransaction"]
