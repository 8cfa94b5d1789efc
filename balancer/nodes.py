"""Moved to :mod:`balancer.core.nodes`; this import path stays for one release."""

from balancer.core.nodes import *  # noqa: F403
from balancer.core.nodes import __all__ as __all__
