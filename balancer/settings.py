"""Moved to :mod:`balancer.core.settings`; this import path stays for one release."""

from balancer.core.settings import *  # noqa: F403
from balancer.core.settings import __all__ as __all__
