"""Result output shared by the benchmarks: JSON lines with the machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def emit(bench: str, **fields: Any) -> None:
    """Print one result line and append it to bench/results/<bench>.jsonl."""
    record = {"bench": bench, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{bench}.jsonl", "a") as fh:
        fh.write(line + "\n")


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)
