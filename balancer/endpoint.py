"""Moved to :mod:`balancer.core.endpoint`; this import path stays for one release."""

from balancer.core.endpoint import *  # noqa: F403
from balancer.core.endpoint import __all__ as __all__
