"""Moved to :mod:`balancer.sync.pubsub`; this import path stays for one release."""

from balancer.sync.pubsub import *  # noqa: F403
from balancer.sync.pubsub import __all__ as __all__
