"""Moved to :mod:`balancer.core.errors`; this import path stays for one release."""

from balancer.core.errors import *  # noqa: F403
from balancer.core.errors import __all__ as __all__
