# ruff: noqa: E501, RUF001  (Markdown tables: long lines, multiplication signs)
"""Render the README's benchmark tables from bench/results/*.jsonl (latest line per case).

Run: .venv/bin/python -m bench.table
"""

from __future__ import annotations

import json
from typing import Any

from bench.common import RESULTS


def latest(bench: str, key: tuple[str, ...]) -> list[dict[str, Any]]:
    path = RESULTS / f"{bench}.jsonl"
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            rows[tuple(record.get(k) for k in key)] = record
    return list(rows.values())


def main() -> None:
    picks = latest("pick_cost", ("strategy", "endpoints"))
    by_strategy: dict[str, dict[int, int]] = {}
    for r in picks:
        by_strategy.setdefault(r["strategy"], {})[r["endpoints"]] = r["ns_per_pick"]
    print(
        "Pick cost, ns per `Router.pick()` (`python -m bench.pick_cost`; goal ≤ 1000 at 100, ≤ 2000 at 10 000):\n"
    )
    print("| strategy | 10 | 100 | 10 000 |\n|---|---:|---:|---:|")
    for name, sizes in sorted(by_strategy.items()):
        print(f"| `{name}` | {sizes.get(10)} | {sizes.get(100)} | {sizes.get(10000)} |")

    print(
        "\nSingle-thread ops/s, median of 5 alternating rounds of 2 s (`python -m bench.throughput --server valkey|redis`; goal ≥ 1.5× RedisCluster and ≥ plain Redis):\n"
    )
    print(
        "| server | op | slotpilot ClusterClient | redis-py RedisCluster | redis-py Redis, one node | vs RedisCluster | vs one node |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    rows = latest("throughput", ("server", "op", "client"))
    ratios = {(r["server"], r["op"]): r for r in latest("throughput_ratio", ("server", "op"))}
    for server in ("valkey", "redis"):
        for op in ("GET", "SET"):
            rate = {
                r["client"]: r["ops_per_second"]
                for r in rows
                if (r["server"], r["op"]) == (server, op)
            }
            if not rate:
                continue
            ratio = ratios[(server, op)]
            print(
                f"| {server} | {op} | {rate['slotpilot.ClusterClient']:,} | {rate['redis.RedisCluster']:,} "
                f"| {rate['redis.Redis (one node)']:,} | {ratio['vs_redis_cluster']}× | {ratio['vs_plain_redis']}× |"
            )

    print(
        "\nReplica reads under load, 6 s, fault at 2 s (`python -m bench.failures --server valkey|redis`; goal 0 errors, stall ≤ 1 s):\n"
    )
    print(
        "| server | fault | client | reads | errors | longest stall |\n|---|---|---|---:|---:|---:|"
    )
    for r in sorted(
        latest("failures", ("server", "fault", "client")),
        key=lambda r: (r["server"] != "valkey", r["fault"], r["client"]),
    ):
        print(
            f"| {r['server']} | {r['fault']} | {r['client']} | {r['reads']:,} | {r['errors']} | {r['longest_stall_seconds']} s |"
        )

    print(
        "\nProbe cycle, median of 5 (`python -m bench.probe_cycle`; goal ≤ 1 s wall, ≤ 5 % CPU at a 5 s interval):\n"
    )
    print(
        "| nodes | wall per cycle | controller CPU per cycle | CPU at 5 s interval |\n|---:|---:|---:|---:|"
    )
    for r in sorted(latest("probe_cycle", ("nodes",)), key=lambda r: r["nodes"]):
        print(
            f"| {r['nodes']} | {r['wall_seconds'] * 1000:.0f} ms | {r['cpu_seconds'] * 1000:.0f} ms | {r['cpu_percent_at_interval']} % |"
        )

    print(
        "\nResharding 3 → 5 primaries, 50 000 keys, 6 553 slots (`python -m bench.migration --server valkey|redis`; goals: classic ≥ 10×, atomic ≥ 50× redis-cli):\n"
    )
    print(
        "| server | method | seconds | keys moved | keys/s | vs redis-cli |\n|---|---|---:|---:|---:|---:|"
    )
    ratios = {
        (r["server"], r["method"]): r["vs_redis_cli"]
        for r in latest("migration_ratio", ("server", "method"))
    }
    for r in sorted(
        latest("migration", ("server", "method")),
        key=lambda r: (r["server"] != "valkey", r["method"]),
    ):
        ratio = ratios.get((r["server"], r["method"]))
        print(
            f"| {r['server']} | {r['method']} | {r['seconds']} | {r['keys']:,} | {r['keys_per_second']:,} | {ratio}× |"
        )


if __name__ == "__main__":
    main()
