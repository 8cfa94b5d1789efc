"""Moved to :mod:`balancer.core.targets`; this import path stays for one release."""

from balancer.core.targets import *  # noqa: F403
from balancer.core.targets import __all__ as __all__
