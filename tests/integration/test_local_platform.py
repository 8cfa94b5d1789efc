"""LocalPlatform runs consumer replicas as real processes."""

from __future__ import annotations

import os
import sys

import pytest

from controller.platform import LocalPlatform, PlatformError

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_scale_consumers_up_and_down_highest_first() -> None:
    platform = LocalPlatform({"email": SLEEPER}, grace_seconds=2)
    try:
        platform.set_replicas("email", 3)
        assert platform.get_replicas("email") == 3
        assert [m.name for m in platform.members("email")] == ["email-0", "email-1", "email-2"]
        pids = [p.pid for p in platform._procs["email"]]
        platform.set_replicas("email", 1)
        assert platform.get_replicas("email") == 1
        assert platform._procs["email"][0].pid == pids[0]  # the lowest replica survives
        for pid in pids[1:]:
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # already reaped: it is gone
    finally:
        platform.close()
    assert platform.get_replicas("email") == 0


def test_exited_replicas_are_not_counted() -> None:
    platform = LocalPlatform({"job": [sys.executable, "-c", "pass"]})
    platform.set_replicas("job", 2)
    for proc in platform._procs["job"]:
        proc.wait(timeout=10)
    assert platform.get_replicas("job") == 0
    platform.close()


def test_errors_name_the_problem() -> None:
    platform = LocalPlatform({"email": SLEEPER})
    with pytest.raises(PlatformError, match="unknown target 'sms'"):
        platform.get_replicas("sms")
    with pytest.raises(PlatformError, match=">= 0"):
        platform.set_replicas("email", -1)
    with pytest.raises(PlatformError, match="resharding"):
        platform.set_replicas("shards", 4)
