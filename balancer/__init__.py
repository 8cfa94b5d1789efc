"""slotpilot's client SDK: strategies, per-node circuit breakers, a slot-aware cluster client."""

from balancer.aio import AsyncClusterClient
from balancer.core.breaker import BreakerPolicy
from balancer.core.endpoint import Endpoint
from balancer.core.errors import (
    ClusterError,
    CrossSlotError,
    NodeUnavailable,
    NoHealthyEndpoint,
    NotSentError,
    OutcomeUnknown,
    SlotNotCovered,
)
from balancer.core.router import EndpointStats, RetryPolicy, Router
from balancer.core.strategies import STRATEGIES, Strategy
from balancer.sync.client import ClusterClient

__all__ = [
    "STRATEGIES",
    "AsyncClusterClient",
    "BreakerPolicy",
    "ClusterClient",
    "ClusterError",
    "CrossSlotError",
    "Endpoint",
    "EndpointStats",
    "NoHealthyEndpoint",
    "NodeUnavailable",
    "NotSentError",
    "OutcomeUnknown",
    "RetryPolicy",
    "Router",
    "SlotNotCovered",
    "Strategy",
]
