"""Run every benchmark in sequence: .venv/bin/python -m bench.run_all (or make bench)."""

from __future__ import annotations

import shutil
import sys

from bench import (
    async_throughput,
    failures,
    healing,
    migration,
    pick_cost,
    probe_cycle,
    table,
    throughput,
)
from controller.localcluster import available_servers


def main() -> None:
    servers = [s for s in ("valkey", "redis") if s in available_servers()]
    runs: list[tuple[object, list[str]]] = [(pick_cost, [])]
    for server in servers:
        runs += [(throughput, ["--server", server]), (failures, ["--server", server])]
        runs.append((async_throughput, ["--server", server]))
        if shutil.which("redis-cli") or server == "valkey":
            runs.append((migration, ["--server", server]))
    runs.append((probe_cycle, []))
    runs.append((healing, []))
    for module, args in runs:
        sys.argv = [module.__name__, *args]  # type: ignore[attr-defined]
        module.main()  # type: ignore[attr-defined]
    table.main()


if __name__ == "__main__":
    main()
