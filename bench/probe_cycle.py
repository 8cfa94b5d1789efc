"""Probe cycle wall time and controller CPU for 3, 30 and 100 nodes.

Goal (issue 3): a cycle <= 1 s wall and <= 5 % of one CPU at the 5 s default interval.
100 nodes are 100 real server processes of one local cluster (primaries only).
Run: .venv/bin/python -m bench.probe_cycle [--sizes 3 30 100] [--cycles 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import emit, log, machine
from controller.health import Capacity, build_view
from controller.localcluster import LocalCluster
from controller.probe import Probe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 30, 100])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    info = machine()
    for size in args.sizes:
        started = time.monotonic()
        with LocalCluster(size, 0, start_timeout=120) as cluster:
            log(f"{size} nodes up in {time.monotonic() - started:.1f}s")
            probe = Probe([cluster.seed], timeout=0.5)
            view = None
            walls, cpus = [], []
            for _ in range(args.cycles + 1):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                result = probe.run()
                view = build_view(result, view, Capacity(), 2, 3, time.monotonic())
                walls.append(time.perf_counter() - wall0)
                cpus.append(time.process_time() - cpu0)
            walls, cpus = walls[1:], cpus[1:]  # the first cycle opens connections
            assert view is not None and len(view.nodes) == size
            assert all(s.ok for s in result.samples.values())
            emit(
                "probe_cycle",
                nodes=size,
                wall_seconds=round(statistics.median(walls), 4),
                cpu_seconds=round(statistics.median(cpus), 4),
                cpu_percent_at_interval=round(100 * statistics.median(cpus) / args.interval, 2),
                interval_seconds=args.interval,
                **info,
            )
            probe.close()


if __name__ == "__main__":
    main()
