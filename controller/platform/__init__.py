"""Where replica counts change: the local platform (processes) or Kubernetes.

Production modules only: the test/dev cluster harness lives in ``controller.localcluster``
and is never imported from here."""

from controller.platform.base import Member, Platform, PlatformError
from controller.platform.local import LocalPlatform

__all__ = ["LocalPlatform", "Member", "Platform", "PlatformError"]
