"""slotpilot's client SDK: strategies, per-node circuit breakers, a slot-aware cluster client."""

from balancer.aio import AsyncClusterClient
from balancer.breaker import BreakerPolicy
from balancer.cluster import ClusterClient
from balancer.endpoint import Endpoint
from balancer.errors import (
    ClusterError,
    CrossSlotError,
    NodeUnavailable,
    NoHealthyEndpoint,
    NotSentError,
    OutcomeUnknown,
    SlotNotCovered,
)
from balancer.router import EndpointStats, RetryPolicy, Router
from balancer.strategies import STRATEGIES, Strategy

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
