"""Moved to :mod:`balancer.core.reads`; this import path stays for one release."""

from balancer.core.reads import *  # noqa: F403
from balancer.core.reads import __all__ as __all__
