"""Single-thread GET/SET throughput on one local 3x1 cluster, in one run, interleaved in
50 ms slices (so a shared machine's background load hits every contender alike):
ClusterClient vs redis-py RedisCluster vs plain redis-py Redis to one node vs a raw
redis-py ``Connection`` per primary (``send_command`` + ``read_response``: the limit a
Python client on redis-py's parser can reach).

Goal (issue 2): ClusterClient >= 1.5x RedisCluster, and >= plain Redis to one node.
Goal (issue 18): ClusterClient >= 90 % of the raw Connection, GET and SET.
Run: .venv/bin/python -m bench.throughput [--seconds 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.connection import Connection
from redis.crc import key_slot

from balancer import ClusterClient
from bench.common import emit, log, machine
from controller.localcluster import LocalCluster, available_servers


def interleaved(
    fns: dict[str, Callable[[int], object]], seconds: float, slice_s: float = 0.05
) -> dict[str, float]:
    """Ops/s of each contender over ``seconds`` each, run in alternating slices of
    ``slice_s``: load from other processes on a shared machine then falls on every
    contender alike, so their ratio means something even when absolute rates swing."""
    done = dict.fromkeys(fns, 0)
    spent = dict.fromkeys(fns, 0.0)
    i = 0
    for _ in range(max(1, round(seconds / slice_s))):
        for name, fn in fns.items():
            started = time.perf_counter()
            deadline = started + slice_s
            while True:
                for _ in range(20):
                    fn(i)
                    i += 1
                done[name] += 20
                now = time.perf_counter()
                if now >= deadline:
                    break
            spent[name] += now - started
    return {name: done[name] / spent[name] for name in fns}


RAW = "redis.connection.Connection (raw, per primary)"


class RawConnections:
    """One raw redis-py ``Connection`` per primary, picked by slot: no pool, no retry,
    no routing table beyond a dict; what is left is redis-py's packing and parsing."""

    def __init__(self, by_port: dict[int, Connection]) -> None:
        self.by_slot: list[Connection] = []
        any_conn = next(iter(by_port.values()))
        any_conn.send_command("CLUSTER", "SLOTS")
        owner = [0] * 16384
        for start, end, primary, *_ in any_conn.read_response():
            for slot in range(start, end + 1):
                owner[slot] = int(primary[1])
        self.by_slot = [by_port[port] for port in owner]

    def get(self, key: str) -> Any:
        conn = self.by_slot[key_slot(key.encode())]
        conn.send_command("GET", key)
        return conn.read_response()

    def set(self, key: str, value: str) -> Any:
        conn = self.by_slot[key_slot(key.encode())]
        conn.send_command("SET", key, value)
        return conn.read_response()

    def close(self) -> None:
        for conn in set(self.by_slot):
            conn.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server", choices=["valkey", "redis"], default="valkey")
    args = parser.parse_args()
    with LocalCluster(3, 1, binary=available_servers()[args.server]) as cluster:
        first = cluster.primaries()[0]
        owned = {
            s
            for r in first.client().execute_command("CLUSTER", "SLOTS")
            if r[2][1] == first.port
            for s in range(r[0], r[1] + 1)
        }
        # 100 keys, all on the first primary, so the plain client can serve them too.
        keys = [k for k in (f"bench:{i}" for i in range(5000)) if key_slot(k.encode()) in owned][
            :100
        ]
        ours = ClusterClient(cluster.seed)
        theirs = redis.RedisCluster(host="127.0.0.1", port=first.port)
        plain = redis.Redis(host="127.0.0.1", port=first.port)
        raw = RawConnections({p.port: Connection(port=p.port) for p in cluster.primaries()})
        clients: dict[str, Any] = {
            "slotpilot.ClusterClient": ours,
            "redis.RedisCluster": theirs,
            "redis.Redis (one node)": plain,
            RAW: raw,
        }
        for key in keys:
            plain.set(key, "x" * 32)
        results: dict[tuple[str, str], list[float]] = {}
        for round_no in range(args.rounds):
            for op in ("GET", "SET"):
                fns: dict[str, Callable[[int], object]] = {}
                for name, client in clients.items():
                    if op == "GET":
                        fns[name] = lambda i, c=client: c.get(keys[i % 100])
                    else:
                        fns[name] = lambda i, c=client: c.set(keys[i % 100], "y" * 32)
                for name, rate in interleaved(fns, args.seconds).items():
                    results.setdefault((name, op), []).append(rate)
                    log(f"round {round_no} {op} {name}: {rate:,.0f}/s")
        info = machine()
        for (name, op), rates in results.items():
            emit(
                "throughput",
                client=name,
                op=op,
                server=args.server,
                ops_per_second=round(statistics.median(rates)),
                rounds=args.rounds,
                **info,
            )
        for op in ("GET", "SET"):
            med = {n: statistics.median(results[(n, op)]) for n in clients}
            emit(
                "throughput_ratio",
                op=op,
                server=args.server,
                vs_redis_cluster=round(
                    med["slotpilot.ClusterClient"] / med["redis.RedisCluster"], 2
                ),
                vs_plain_redis=round(
                    med["slotpilot.ClusterClient"] / med["redis.Redis (one node)"], 2
                ),
                vs_raw_connection=round(med["slotpilot.ClusterClient"] / med[RAW], 2),
            )
        ours.close()
        theirs.close()
        raw.close()


if __name__ == "__main__":
    main()
