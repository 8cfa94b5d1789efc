"""Shared fixtures: real Redis/Valkey clusters on 127.0.0.1, torn down even on failure."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from controller.localcluster import LocalCluster, available_servers
from controller.platform.local_nodes import DEFAULT_LOCAL_PORTS, LOCAL_PORTS_ENV


def _worker_ports() -> None:
    """Under pytest-xdist each worker takes its own slice of the local port range, and the
    servers, controllers and CLIs it starts inherit it: no two workers race for a port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or LOCAL_PORTS_ENV in os.environ:
        return
    index, count = int(worker[2:]), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    low, high = DEFAULT_LOCAL_PORTS
    span = (high - low + 1) // max(count, 1)
    start = low + index * span
    os.environ[LOCAL_PORTS_ENV] = f"{start}-{start + span - 1}"


_worker_ports()

# Nothing a test starts writes to the user's own state directory: the local platform's
# default (``$XDG_STATE_HOME/slotpilot/nodes``) points into a directory of this run, which
# the servers, controllers and CLIs the tests start inherit.
USER_STATE = os.path.join(
    os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state"),
    "slotpilot",
)
_RUN_STATE = tempfile.mkdtemp(prefix="slotpilot-test-state-")
os.environ["XDG_STATE_HOME"] = _RUN_STATE
os.environ.pop("SLOTPILOT_STATE_DIR", None)


def _listing(path: str) -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(path):
        found.update(os.path.join(folder, name) for name in dirs + files)
    return found


_USER_STATE_BEFORE = _listing(USER_STATE)


@pytest.fixture(scope="session", autouse=True)
def _user_state_untouched() -> Iterator[None]:
    """The suite leaves the user's ~/.local/state/slotpilot as it found it."""
    yield
    shutil.rmtree(_RUN_STATE, ignore_errors=True)
    added = _listing(USER_STATE) - _USER_STATE_BEFORE
    assert not added, f"the tests wrote into the user's state directory: {sorted(added)[:5]}"


SERVERS = available_servers()
FLAVORS = ["valkey", "redis"]


def _flavor_param(flavor: str) -> Any:
    reason = f"no {flavor} server binary on this machine"
    return pytest.param(
        flavor, id=flavor, marks=pytest.mark.skipif(flavor not in SERVERS, reason=reason)
    )


@pytest.fixture(params=[_flavor_param(f) for f in FLAVORS])
def server_flavor(request: pytest.FixtureRequest) -> str:
    """Each cluster test runs on Valkey (wheel) and on Redis when Debian's is present."""
    return str(request.param)


@pytest.fixture
def make_cluster(server_flavor: str) -> Iterator[Callable[..., LocalCluster]]:
    """Factory for clusters of the current flavor; every one started is stopped."""
    started: list[LocalCluster] = []

    def factory(shards: int = 3, replicas: int = 1, **kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(shards, replicas, binary=SERVERS[server_flavor], **kwargs)
        started.append(cluster)
        return cluster.start()

    yield factory
    for cluster in started:
        cluster.stop()


@pytest.fixture
def cluster(make_cluster: Callable[..., LocalCluster]) -> LocalCluster:
    """A fresh 3 primaries x 1 replica cluster."""
    return make_cluster(3, 1)


@pytest.fixture(scope="module", params=[_flavor_param(f) for f in FLAVORS])
def standalone_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """One plain (non-cluster) server of each flavor per module, on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as workdir:
        args = [SERVERS[request.param], "--port", str(port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", workdir]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            client.close()
            yield port
        finally:
            proc.terminate()
            proc.wait(10)
