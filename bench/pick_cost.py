"""Cost of one Router.pick() per strategy at 10, 100 and 10 000 endpoints.

Goal (issue 2): <= 1 us at 100 endpoints, <= 2 us at 10 000.
Run: .venv/bin/python -m bench.pick_cost
"""

from __future__ import annotations

import timeit

from balancer import STRATEGIES, Endpoint, Router
from bench.common import emit, machine


def main() -> None:
    info = machine()
    for name in sorted(STRATEGIES):
        for size in (10, 100, 10_000):
            endpoints = [
                Endpoint(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:6379", weight=1 + i % 3)
                for i in range(size)
            ]
            router = Router(endpoints, strategy=name)
            number = 50_000
            # best of many short runs: the least disturbed by other tenants of the VM
            best = min(timeit.repeat(router.pick, number=number, repeat=20)) / number
            emit("pick_cost", strategy=name, endpoints=size, ns_per_pick=round(best * 1e9), **info)


if __name__ == "__main__":
    main()
