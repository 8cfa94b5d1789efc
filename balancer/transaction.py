"""Moved to :mod:`balancer.sync.transaction`; this import path stays for one release."""

from balancer.sync.transaction import *  # noqa: F403
from balancer.sync.transaction import __all__ as __all__
