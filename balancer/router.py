"""Moved to :mod:`balancer.core.router`; this import path stays for one release."""

from balancer.core.router import *  # noqa: F403
from balancer.core.router import __all__ as __all__
