"""Moved to :mod:`balancer.core.keys`; this import path stays for one release."""

from balancer.core.keys import *  # noqa: F403
from balancer.core.keys import __all__ as __all__
