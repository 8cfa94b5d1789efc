"""Moved to :mod:`balancer.core.slots`; this import path stays for one release."""

from balancer.core.slots import *  # noqa: F403
from balancer.core.slots import __all__ as __all__
