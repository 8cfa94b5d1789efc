"""The test/dev harness: a real Redis/Valkey cluster on 127.0.0.1 from a server binary.

The test fixtures, the benchmarks, ``slotpilot local-cluster`` and ``slotpilot demo``
build on it. Its nodes carry test settings (no persistence, protected mode off, the
password on argv, a 0 s diskless-sync delay), so production code never imports this
module: what ``scale`` and the controller start for users is
:mod:`controller.platform.local_nodes`. Each node runs in its own temp dir on a free
port, tied to this process with ``PR_SET_PDEATHSIG`` so no server outlives a crashed
test run; :meth:`LocalCluster.stop` also stops the nodes that joined the cluster later
(a controller's autoscale), so a dev cluster leaves no orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from balancer.endpoint import parse_address
from balancer.slots import TOTAL_SLOTS, parse_cluster_shards
from controller.platform.local_nodes import (
    CONFIG_FILE,
    ClusterAuth,
    ClusterStartError,
    available_servers,
    find_server_binary,
    free_port,
    is_local_host,
    port_ordinal,
    wait_stopped,
)
from controller.probe import parse_node_entries
from controller.scaling import NodeNotEmpty

__all__ = [
    "ClusterAuth",
    "ClusterStartError",
    "LocalCluster",
    "ServerNode",
    "TLSFiles",
    "available_servers",
    "find_server_binary",
    "free_port",
    "port_ordinal",
]

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class TLSFiles:
    """Certificate files for a TLS-only cluster (plain port disabled)."""

    cert_file: str
    key_file: str
    ca_file: str


def _die_with_parent() -> None:
    """Run in the child before exec: SIGKILL the server if this Python process dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ServerNode:
    """One server process of the local cluster."""

    port: int
    workdir: Path
    binary: str
    extra_args: Sequence[str] = ()
    tls: TLSFiles | None = None
    auth: ClusterAuth | None = None
    node_timeout_ms: int = 2000
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command_line(self) -> list[str]:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--cluster-announce-ip", "127.0.0.1",
            "--dir", str(self.workdir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--appendonly", "no",
            "--save", "",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            # Replicated PINGs move the replication offset, which Redis 7.0 needs before
            # it reports a replica "online" rather than "loading" in CLUSTER SHARDS.
            "--repl-ping-replica-period", "1",
            "--logfile", "server.log",
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.tls is not None:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cluster", "yes",
                "--tls-replication", "yes",
                "--tls-cert-file", self.tls.cert_file,
                "--tls-key-file", self.tls.key_file,
                "--tls-ca-cert-file", self.tls.ca_file,
            ]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        if self.auth is not None:
            if self.auth.username is None:
                args += ["--requirepass", self.auth.password, "--masterauth", self.auth.password]
            else:
                # One argv token per ACL rule: the server joins them into one directive.
                args += [
                    "--user", "default", "off",
                    "--user", self.auth.username, "on", f">{self.auth.password}",
                    "~*", "&*", "+@all",
                    "--masteruser", self.auth.username,
                    "--masterauth", self.auth.password,
                ]  # fmt: skip
        return args + list(self.extra_args)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command_line(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )

    def client(self, timeout: float = 2.0, **kwargs: Any) -> redis.Redis:
        """An admin connection straight to this node (not cluster-aware)."""
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "decode_responses": True,
        }
        if self.auth is not None:
            options["username"] = self.auth.username
            options["password"] = self.auth.password
        if self.tls is not None:
            options.update(
                ssl=True,
                ssl_certfile=self.tls.cert_file,
                ssl_keyfile=self.tls.key_file,
                ssl_ca_certs=self.tls.ca_file,
            )
        options.update(kwargs)
        return redis.Redis(**options)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL (works on a SIGSTOPped process too) and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful SIGTERM, SIGKILL after ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "server.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class LocalCluster:
    """N primaries x R replicas of a real server binary on 127.0.0.1.

    Use as a context manager (or call :meth:`start` / :meth:`stop`); :meth:`stop` kills
    every process it started, including nodes added later with :meth:`spawn_node`.
    With ``base_port`` the first nodes take consecutive ports from it, primaries first
    (as Redis's ``create-cluster`` does from 30001); otherwise each takes a free port.
    """

    def __init__(
        self,
        shards: int = 3,
        replicas: int = 1,
        binary: str | None = None,
        node_timeout_ms: int = 2000,
        extra_args: Sequence[str] = (),
        tls: TLSFiles | None = None,
        auth: ClusterAuth | None = None,
        workdir: str | Path | None = None,
        start_timeout: float = 30.0,
        base_port: int | None = None,
    ) -> None:
        if shards < 1 or replicas < 0:
            raise ValueError("shards must be >= 1 and replicas >= 0")
        if base_port is not None and not 0 < base_port <= 65536 - shards * (replicas + 1):
            raise ValueError(f"base_port {base_port}: the cluster's ports pass 65535")
        self.shards = shards
        self.replicas = replicas
        self.binary = binary or find_server_binary()
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = tuple(extra_args)
        self.tls = tls
        self.auth = auth
        self.start_timeout = start_timeout
        self.base_port = base_port
        self.keep_going: Callable[[], bool] = lambda: True
        self._owns_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="slotpilot-cluster-"))
        self.nodes: list[ServerNode] = []

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        try:
            ports: list[int | None] = [None] * (self.shards * (self.replicas + 1))
            if self.base_port is not None:
                ports = [self.base_port + i for i in range(len(ports))]
            primaries = [self.spawn_node(port=port) for port in ports[: self.shards]]
            replicas = [self.spawn_node(port=port) for port in ports[self.shards :]]
            self._wait_all_answer(primaries + replicas)
            self._meet(primaries + replicas)
            self._assign_slots(primaries)
            self._wait_known(primaries + replicas)
            for i, replica in enumerate(replicas):
                primary = primaries[i % self.shards]
                replica.client().execute_command("CLUSTER", "REPLICATE", self.node_id(primary))
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop_joined_members()
        for node in self.nodes:
            node.kill()
        if self._owns_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop_joined_members(self) -> None:
        """Shut down the members on this host that joined after we started (nodes a
        controller's autoscale added); delete their directories when the production node
        source wrote them. Forgotten or unreachable nodes are not ours to find."""
        ours = {n.address for n in self.nodes}
        text = None
        for node in self.nodes:
            if node.running:
                with contextlib.suppress(redis.RedisError, OSError):
                    text = str(node.client(timeout=1.0).execute_command("CLUSTER", "NODES"))
                    break
        for entry in parse_node_entries(text or ""):
            if not entry.address or entry.address in ours or entry.flags & {"fail", "noaddr"}:
                continue
            host, port = parse_address(entry.address)
            if not is_local_host(host):
                continue
            probe = ServerNode(port, self.workdir, self.binary, tls=self.tls, auth=self.auth)
            client = probe.client(timeout=1.0, retry=Retry(NoBackoff(), 0))
            workdir = None
            with contextlib.suppress(redis.RedisError, OSError):
                workdir = str(client.config_get("dir").get("dir"))
            with contextlib.suppress(redis.RedisError, OSError):
                client.shutdown(nosave=True, now=True)
            stopped = wait_stopped(host, port, 5.0)
            if stopped and workdir and (Path(workdir) / CONFIG_FILE).exists():
                shutil.rmtree(workdir, ignore_errors=True)

    def spawn_node(self, extra_args: Sequence[str] = (), port: int | None = None) -> ServerNode:
        """Start one more (empty, not yet met) cluster-enabled server process."""
        port = port or free_port()
        node = ServerNode(
            port=port,
            workdir=self.workdir / str(port),
            binary=self.binary,
            extra_args=self.extra_args + tuple(extra_args),
            tls=self.tls,
            auth=self.auth,
            node_timeout_ms=self.node_timeout_ms,
        )
        node.start()
        self.nodes.append(node)
        return node

    def add_node(self, replica_of: ServerNode | None = None) -> ServerNode:
        """Start a node, MEET it into the cluster (as an empty primary, or as a replica of
        ``replica_of``) and wait until every node agrees it is online."""
        node = self.spawn_node()
        try:
            self._wait_all_answer([node])
            member = next(n for n in self.nodes if n.running and n is not node)
            member.client().execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            self._wait_known([n for n in self.nodes if n.running])
            if replica_of is not None:
                node.client().execute_command("CLUSTER", "REPLICATE", self.node_id(replica_of))
            self.wait_healthy()
        except BaseException:
            node.kill()
            raise
        return node

    # -- the shard scaler's node source (controller.scaling.NodeSource) ----------------

    def add_nodes(self, count: int, existing: Sequence[str] = ()) -> list[str]:
        """Start ``count`` empty nodes on ports above every existing one (so they are the
        highest ordinals, the first to go on scale-in) and wait until they answer."""
        ports = [port_ordinal(a)[1] for a in existing] + [n.port for n in self.nodes]
        above = max(ports, default=None)
        started = []
        try:
            for _ in range(count):
                node = self.spawn_node(port=free_port(above=above))
                above = node.port
                started.append(node)
            self._wait_all_answer(started)
        except BaseException:
            for node in started:
                node.kill()
            raise
        return [n.address for n in started]

    def check_leaving(self, addresses: Sequence[str]) -> None:
        """Local processes can always be stopped, whichever leave."""

    def size(self) -> int | None:
        """Nothing declares how many local nodes there should be."""
        return None

    def pending(self) -> list[str]:
        """Local processes start or fail at once: none waits to be scheduled."""
        return []

    def remove_nodes(self, addresses: Sequence[str]) -> None:
        """``SHUTDOWN NOSAVE`` each node (ours or adopted), then reap the ones we started."""
        for address in addresses:
            port = port_ordinal(address)[1]
            ours = next((n for n in self.nodes if n.port == port), None)
            probe = ours or ServerNode(
                port, self.workdir, self.binary, tls=self.tls, auth=self.auth
            )
            # The reply is the hang-up; without retries off, redis-py spends seconds
            # reconnecting to a server that is gone.
            once = probe.client(timeout=5.0, retry=Retry(NoBackoff(), 0))
            with contextlib.suppress(redis.ConnectionError, OSError):
                if keys := int(once.dbsize()):  # SHUTDOWN NOSAVE only once proven empty
                    raise NodeNotEmpty(address, f"still holds {keys} keys", keys)
            with contextlib.suppress(redis.RedisError, OSError):
                once.shutdown(nosave=True, now=True)
            if ours is not None and ours.process is not None:
                try:
                    ours.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    ours.kill()

    def ordinal(self, address: str) -> tuple[str, int]:
        return port_ordinal(address)

    # -- queries ---------------------------------------------------------------------

    @property
    def seed(self) -> str:
        return self.nodes[0].address

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.seed}"

    def node_by_port(self, port: int) -> ServerNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def node_id(self, node: ServerNode) -> str:
        return str(node.client().execute_command("CLUSTER", "MYID"))

    def role(self, node: ServerNode) -> str:
        info = node.client().info("replication")
        return str(info["role"])

    def primaries(self) -> list[ServerNode]:
        return [n for n in self.nodes if n.running and self._safe_role(n) == "master"]

    def replicas_of(self, primary: ServerNode) -> list[ServerNode]:
        pid = self.node_id(primary)
        result = []
        for node in self.nodes:
            if node is primary or not node.running:
                continue
            with contextlib.suppress(redis.RedisError):
                info = node.client().info("replication")
                if info.get("role") == "slave" and info.get("master_port") == primary.port:
                    result.append(node)
                    continue
                line = self._myself_line(node)
                if line and line[3] == pid:
                    result.append(node)
        return result

    def _safe_role(self, node: ServerNode) -> str | None:
        try:
            return self.role(node)
        except redis.RedisError:
            return None

    def _myself_line(self, node: ServerNode) -> list[str] | None:
        for line in str(node.client().execute_command("CLUSTER", "NODES")).splitlines():
            parts = line.split()
            if len(parts) > 3 and "myself" in parts[2]:
                return parts
        return None

    # -- forming the cluster -----------------------------------------------------------

    def _deadline(self) -> float:
        return time.monotonic() + self.start_timeout

    def _wait_all_answer(self, nodes: Sequence[ServerNode]) -> None:
        deadline = self._deadline()
        for node in nodes:
            while True:
                if not node.running:
                    stderr = (
                        node.process.stderr.read().decode()
                        if node.process and node.process.stderr
                        else ""
                    )
                    raise ClusterStartError(
                        f"{node.binary} on port {node.port} exited: {stderr}{node.log_tail()}"
                    )
                try:
                    node.client(timeout=0.5).ping()
                    break
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise ClusterStartError(
                            f"node {node.address} never answered PING"
                        ) from None
                    time.sleep(0.02)

    def _meet(self, nodes: Sequence[ServerNode]) -> None:
        first = nodes[0].client()
        for node in nodes[1:]:
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)

    def _assign_slots(self, primaries: Sequence[ServerNode]) -> None:
        per = TOTAL_SLOTS // len(primaries)
        start = 0
        for i, node in enumerate(primaries):
            end = TOTAL_SLOTS - 1 if i == len(primaries) - 1 else start + per - 1
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
            start = end + 1

    def _wait_known(self, nodes: Sequence[ServerNode]) -> None:
        """Wait until every node knows every other by its real id. A line count is not
        enough: a node still in handshake is listed under a random temporary id, and a
        REPLICATE naming the real id then fails with "Unknown node"."""
        ids = {self.node_id(n) for n in nodes}

        def known() -> bool:
            for n in nodes:
                text = str(n.client().execute_command("CLUSTER", "NODES"))
                if "handshake" in text or not ids <= {
                    line.split(" ", 1)[0] for line in text.splitlines()
                }:
                    return False
            return True

        self._wait(known, "nodes never all learned each other")

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until every running node says ``cluster_state:ok``, every node's
        ``CLUSTER SHARDS`` lists every running node as online with the same shards, and
        every replica has finished its first sync (so replica reads really reach it)."""

        def healthy() -> bool:
            running = [n for n in self.nodes if n.running]
            expected = {n.address for n in running}
            views = set()
            for node in running:
                client = node.client(timeout=1.0)
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                info = client.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
                raw = client.execute_command("CLUSTER", "SHARDS")
                slot_map = parse_cluster_shards(raw, tls=self.tls is not None)
                online = {
                    n.address
                    for shard in slot_map.shards
                    for n in (shard.primary, *shard.replicas)
                    if n.online
                }
                if not expected <= online:
                    return False
                views.add(
                    tuple(
                        sorted(
                            (
                                s.primary.address,
                                tuple(sorted(r.address for r in s.replicas)),
                                s.ranges,
                            )
                            for s in slot_map.shards
                        )
                    )
                )
            return len(views) == 1

        self._wait(healthy, "cluster never became healthy", timeout)

    def _wait(self, check: Any, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.RedisError, KeyError, IndexError) as exc:
                last_error = exc
            time.sleep(0.05)
        logs = "\n".join(f"--- {n.address}\n{n.log_tail(5)}" for n in self.nodes)
        raise ClusterStartError(f"{what} within timeout (last error: {last_error})\n{logs}")

    def shard_map(self) -> list[tuple[ServerNode, list[ServerNode]]]:
        """(primary, replicas) per shard, as the cluster reports it now."""
        return [(p, self.replicas_of(p)) for p in self.primaries()]

    def keys_everywhere(self) -> Iterator[str]:
        """Every key stored on a running primary (for loss checks in tests)."""
        for node in self.primaries():
            yield from node.client().scan_iter(count=1000)
