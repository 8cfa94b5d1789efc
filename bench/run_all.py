"""Run every benchmark in sequence: .venv/bin/python -m bench.run_all (or make bench)."""

from __future__ import annotations

import sys

from bench import failures, pick_cost, throughput


def main() -> None:
    for module in (pick_cost, throughput, failures):
        sys.argv = [module.__name__]
        module.main()


if __name__ == "__main__":
    main()
