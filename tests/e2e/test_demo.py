"""`slotpilot demo` end to end, as a user runs it (a real process, real servers)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_scales_out_and_in_live_and_loses_nothing() -> None:
    """The main job: the controller reshards 3 -> 4 -> 3 under SDK load, no client error."""
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "demo", "--verbose"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["errors"] == {}  # each distinct client error with its count: none
    assert summary["keys_written"] > 1000
    assert summary["keys_read_back"] == summary["keys_written"]
    assert summary["reached"] == [3, 4, 3]
    out, back = summary["migrations"]
    assert (out["before"], out["after"], len(out["added"])) == (3, 4, 2)
    assert (back["before"], back["after"]) == (4, 3)
    assert sorted(back["removed"]) == sorted(out["added"])  # the newest shard left
    assert out["slots_moved"] == back["slots_moved"] == 4096
    # one JSON log line per migration batch, and the decisions that triggered them
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    moved = [x for x in lines if x.get("event") == "moved"]
    assert sum(x["slots"] for x in moved) == 8192
    acted = [x for x in lines if x.get("target") == "shards" and x.get("acted")]
    assert [(x["current"], x["desired"]) for x in acted] == [(3, 4), (4, 3)]


def test_fault_demo_runs_clean_and_reads_back_everything() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "demo", "--faults", "--seconds", "3"],
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
