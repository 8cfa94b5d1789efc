"""Moved to :mod:`balancer.core.freshness`; this import path stays for one release."""

from balancer.core.freshness import *  # noqa: F403
from balancer.core.freshness import __all__ as __all__
