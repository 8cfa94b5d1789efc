"""Moved to :mod:`balancer.core.blocking`; this import path stays for one release."""

from balancer.core.blocking import *  # noqa: F403
from balancer.core.blocking import __all__ as __all__
