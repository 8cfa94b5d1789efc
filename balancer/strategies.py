"""Moved to :mod:`balancer.core.strategies`; this import path stays for one release."""

from balancer.core.strategies import *  # noqa: F403
from balancer.core.strategies import __all__ as __all__
