"""Moved to :mod:`balancer.sync.pipeline`; this import path stays for one release."""

from balancer.sync.pipeline import *  # noqa: F403
from balancer.sync.pipeline import __all__ as __all__
