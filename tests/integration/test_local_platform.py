"""LocalPlatform runs consumer replicas as real processes."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from controller.platform import LocalPlatform, PlatformError
from controller.platform.local import BASE_ENV

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def test_scale_consumers_up_and_down_highest_first() -> None:
    platform = LocalPlatform({"email": SLEEPER}, grace_seconds=2)
    try:
        platform.set_replicas("email", 3)
        assert platform.get_replicas("email") == 3
        assert [m.name for m in platform.members("email")] == ["email-0", "email-1", "email-2"]
        pids = platform.pids("email")
        platform.set_replicas("email", 1)
        assert platform.get_replicas("email") == 1
        assert platform.pids("email") == pids[:1]  # the lowest replica survives
        for pid in pids[1:]:
            assert pid is not None
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # already reaped: it is gone
    finally:
        platform.close()
    assert platform.get_replicas("email") == 0


def test_exited_replicas_are_not_counted() -> None:
    platform = LocalPlatform({"job": [sys.executable, "-c", "pass"]})
    platform.set_replicas("job", 2)
    deadline = time.monotonic() + 20
    while platform.get_replicas("job") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert platform.get_replicas("job") == 0
    assert platform.crash_status()["job"]["failed_exits"] == 0  # exit 0 is not a crash
    platform.close()


def test_errors_name_the_problem() -> None:
    platform = LocalPlatform({"email": SLEEPER})
    with pytest.raises(PlatformError, match="unknown target 'sms'"):
        platform.get_replicas("sms")
    with pytest.raises(PlatformError, match=">= 0"):
        platform.set_replicas("email", -1)
    with pytest.raises(PlatformError, match="resharding"):
        platform.set_replicas("shards", 4)


def test_a_replica_gets_only_the_environment_the_config_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SLOTPILOT_PASSWORD", "controller-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    out = tmp_path / "env.json"
    dump = (
        f"import json, os, time; json.dump(dict(os.environ), open({str(out)!r}, 'w')); "
        "time.sleep(60)"
    )
    platform = LocalPlatform({"w": [sys.executable, "-c", dump]},
                             env={"w": ["QUEUE_URL", "MODE=fast", "UNSET_NAME"]})  # fmt: skip
    try:
        platform.set_replicas("w", 1)
        deadline = time.monotonic() + 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # let the dump finish writing
        env = json.loads(out.read_text())
    finally:
        platform.close()
    assert env["QUEUE_URL"] == "redis://127.0.0.1:1/0" and env["MODE"] == "fast"
    assert env["SLOTPILOT_TARGET"] == "w" and env["SLOTPILOT_REPLICA"] == "0"
    allowed = set(BASE_ENV) | {"QUEUE_URL", "MODE", "SLOTPILOT_TARGET", "SLOTPILOT_REPLICA"}
    # the interpreter may add LC_CTYPE itself (PEP 538)
    assert set(env) - {"LC_CTYPE"} <= allowed, sorted(set(env) - allowed)
    assert "SLOTPILOT_PASSWORD" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_a_crashing_replica_is_reported_and_restarted_with_backoff() -> None:
    crashes: list[tuple[str, int]] = []
    crash = [sys.executable, "-c", "import sys; sys.exit(3)"]
    platform = LocalPlatform({"bad": crash}, on_crash=lambda t, c: crashes.append((t, c)),
                             backoff=(0.2, 0.8))  # fmt: skip
    seen: set[int] = set()
    try:
        platform.set_replicas("bad", 1)
        deadline = time.monotonic() + 30
        while len(crashes) < 4 and time.monotonic() < deadline:
            seen.update(p for p in platform.pids("bad") if p is not None)
            time.sleep(0.02)
        status = platform.crash_status()["bad"]
        assert platform.get_replicas("bad") == 1  # still wanted: restarted, not dropped
    finally:
        platform.close()
    assert len(crashes) >= 4 and set(crashes) == {("bad", 3)}
    assert len(seen) >= 2  # new processes were started
    assert status["failed_exits"] >= 4 and status["last_exit_code"] == 3
    assert "exited with 3" in status["recent"][-1] and "restarting in" in status["recent"][-1]
    after = len(crashes)
    time.sleep(1.0)
    assert len(crashes) == after and platform.get_replicas("bad") == 0  # closed: no restarts
