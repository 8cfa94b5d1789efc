"""Moved to :mod:`balancer.sync.client` (the client) and :mod:`balancer.core.routes`
(``ClientStats``); this import path stays for one release."""

from balancer.core.routes import ClientStats
from balancer.core.settings import ReadFrom
from balancer.sync.client import ClusterClient
from balancer.sync.pipeline import ClusterPipeline
from balancer.sync.transaction import ClusterTransaction

__all__ = ["ClientStats", "ClusterClient", "ClusterPipeline", "ClusterTransaction", "ReadFrom"]
