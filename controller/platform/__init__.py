"""Where replica counts change: the local platform (processes) or Kubernetes."""

from controller.platform.base import Member, Platform, PlatformError
from controller.platform.local import LocalPlatform

__all__ = ["LocalPlatform", "Member", "Platform", "PlatformError"]
