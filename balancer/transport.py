"""Moved to :mod:`balancer.sync.transport`; this import path stays for one release."""

from balancer.sync.transport import *  # noqa: F403
from balancer.sync.transport import __all__ as __all__
