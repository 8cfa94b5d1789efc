"""A broken install stops a command at once with one message naming the cause, instead
of the same failure on every call of a loop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "controller.cli"]


@pytest.mark.parametrize("command", [["demo"], ["plan", "--config", "x.yaml"], ["rebalance",
                                     "--seed", "127.0.0.1:1"]])  # fmt: skip
def test_an_unsupported_redis_py_stops_every_command_at_once(
    command: list[str], tmp_path: Path
) -> None:
    # what `pip install --no-deps redis==9.1.0` would leave: the metadata says 9.1.0
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "m.version = lambda name: '9.1.0' if name == 'redis' else real(name)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    began = time.monotonic()
    out = subprocess.run([*CLI, *command], capture_output=True, text=True, env=env,
                         timeout=60, cwd=os.getcwd())  # fmt: skip
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines == [
        "broken environment: redis-py 9.1.0 is not supported by slotpilot (supported: "
        "redis>=8.0,<9); install one, e.g. pip install 'redis>=8.0,<9'"
    ]
    assert time.monotonic() - began < 30  # seconds, not the demo's 90 s of failures
    assert out.stdout == ""
