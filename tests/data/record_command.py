"""Record a server's raw ``COMMAND`` reply (RESP2 and RESP3) for the socket-free key tests.

    python -m tests.data.record_command /path/to/valkey-server valkey
    python -m tests.data.record_command /usr/bin/redis-server redis

writes ``tests/data/command_<name>.json.gz``: ``{"server": version, "resp2": …, "resp3": …}``
with bytes as text, RESP3 maps as JSON objects and sets as lists (the forms the key
locator must read either way).
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).parent


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    return value


def _raw(port: int, protocol: int) -> Any:
    conn = redis.Connection(port=port, protocol=protocol)
    try:
        conn.send_command("COMMAND")
        return conn.read_response()
    finally:
        conn.disconnect()


def record(binary: str, name: str) -> Path:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    info = client.info("server")
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            version = info.get("valkey_version") or info["redis_version"]
            data = {"server": f"{name} {version}", "resp2": _plain(_raw(port, 2)),
                    "resp3": _plain(_raw(port, 3))}  # fmt: skip
            client.close()
        finally:
            proc.terminate()
            proc.wait(10)
    out = HERE / f"command_{name}.json.gz"
    out.write_bytes(gzip.compress(json.dumps(data, sort_keys=True).encode(), mtime=0))
    return out


if __name__ == "__main__":
    print(record(sys.argv[1], sys.argv[2]))
