"""Whole-process wall time of short ``slotpilot`` invocations: what a user waits for.

Goal: ``slotpilot --help`` <= 150 ms median. Each case is a fresh interpreter (one warm-up
run first, so bytecode caches exist), timed from spawn to exit with its output discarded.
Run: .venv/bin/python -m bench.cli_startup [--runs 15] [--save]
(``--save`` also appends the lines to bench/results/cli_startup.jsonl.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import emit, machine


def _slotpilot() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = shutil.which("slotpilot", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "controller.cli"]


def _cases() -> dict[str, list[str]]:
    slotpilot = _slotpilot()
    return {
        "slotpilot --help": [*slotpilot, "--help"],
        "slotpilot --version": [*slotpilot, "--version"],
        "slotpilot rebalance --help": [*slotpilot, "rebalance", "--help"],
        "import controller.cli": [sys.executable, "-c", "import controller.cli"],
    }


def _wall_ms(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15, help="timed runs per case")
    parser.add_argument("--save", action="store_true", help="append to bench/results too")
    args = parser.parse_args()
    info = machine() | {"nproc": len(os.sched_getaffinity(0))}
    for case, argv in _cases().items():
        _wall_ms(argv)  # warm-up: bytecode caches and the page cache
        times = [_wall_ms(argv) for _ in range(args.runs)]
        fields = {
            "case": case,
            "runs": args.runs,
            "median_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1),
            **info,
        }
        if args.save:
            emit("cli_startup", **fields)
        else:
            record = {"bench": "cli_startup", "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            print(json.dumps(record | fields), flush=True)


if __name__ == "__main__":
    main()
