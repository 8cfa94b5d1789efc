"""Moved to :mod:`balancer.core.breaker`; this import path stays for one release."""

from balancer.core.breaker import *  # noqa: F403
from balancer.core.breaker import __all__ as __all__
