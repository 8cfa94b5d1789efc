"""`slotpilot demo` end to end, as a user runs it (a real process, real servers)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_clean_and_reads_back_everything() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "demo", "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["errors"] == []
    assert summary["keys_written"] > 100
    assert summary["keys_read_back"] == summary["keys_written"]
    assert summary["client"]["failovers"] >= 1  # the killed/hung replicas were really hit
    assert "killed replica" in proc.stderr and "SIGSTOP" in proc.stderr


def test_cli_rejects_unknown_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "frobnicate"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
