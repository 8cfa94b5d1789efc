"""TLS end to end through the CLI (Debian's redis-server, built with TLS): the flags and
the config's cluster.tls reach every connection, hostname checking is on unless turned
off (with a warning), and a password is never sent over plain TCP when TLS is asked for."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from controller.localcluster import ClusterAuth, LocalCluster, TLSFiles, free_port
from tests.conftest import SERVERS

pytestmark = pytest.mark.skipif(
    "redis" not in SERVERS, reason="Debian's redis-server (built with TLS) is not installed"
)

CLI = [sys.executable, "-m", "controller.cli"]
PASSWORD = "s3cret-pass-7f2a"


def slotpilot(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if password is not None:
        env["REDISCLI_AUTH"] = password
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env)


@dataclass(frozen=True)
class Certs:
    good: TLSFiles  # for 127.0.0.1 and localhost
    wrong_name: TLSFiles  # same CA, issued for another name only


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory: Path = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    files = {}
    for name, hosts in (("good", ("127.0.0.1", "localhost")), ("wrong", ("node.example",))):
        cert = ca.issue_cert(*hosts)
        cert.private_key_pem.write_to_path(str(directory / f"{name}-key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(directory / f"{name}-cert.pem"))
        files[name] = TLSFiles(
            cert_file=str(directory / f"{name}-cert.pem"),
            key_file=str(directory / f"{name}-key.pem"),
            ca_file=str(directory / "ca.pem"),
        )
    return Certs(files["good"], files["wrong"])


@pytest.fixture(scope="module")
def secure_cluster(certs: Certs) -> Iterator[LocalCluster]:
    auth = ClusterAuth(username="app", password=PASSWORD)
    with LocalCluster(3, 0, binary=SERVERS["redis"], tls=certs.good, auth=auth) as cluster:
        yield cluster


def tls_flags(files: TLSFiles) -> list[str]:
    return ["--cacert", files.ca_file, "--cert", files.cert_file, "--key", files.key_file]


def test_flags_reach_every_node_and_plain_tcp_is_refused(
    secure_cluster: LocalCluster, certs: Certs
) -> None:
    seed, flags = secure_cluster.seed, ["--user", "app", *tls_flags(certs.good)]
    dry = slotpilot("rebalance", "--seed", seed, "--dry-run", "--json", *flags, password=PASSWORD)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["slots_to_move"] == 0  # read every primary over TLS
    fixed = slotpilot("fix", "--seed", seed, *flags, password=PASSWORD)
    assert fixed.returncode == 0 and "nothing to fix" in fixed.stdout, fixed.stderr
    plain = slotpilot("fix", "--seed", seed, "--user", "app", password=PASSWORD)
    assert plain.returncode == 1 and f"cannot reach {seed}" in plain.stderr
    assert "Traceback" not in plain.stderr


def test_scale_with_a_tls_config(
    secure_cluster: LocalCluster, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = certs.good
    config = tmp_path / "tls.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{secure_cluster.seed}"], username: app, password_env: SP_TLS_PW,\n'
        f'  tls: {{enabled: true, ca_file: "{good.ca_file}", cert_file: "{good.cert_file}",'
        f' key_file: "{good.key_file}"}}}}\nshards: {{replicas_per_shard: 0}}\n'
    )
    monkeypatch.setenv("SP_TLS_PW", PASSWORD)
    same = slotpilot("scale", "--shards", "3", "--config", str(config), "--json")
    assert same.returncode == 0, same.stderr
    assert (json.loads(same.stdout)["before"], json.loads(same.stdout)["after"]) == (3, 3)
    out = slotpilot("scale", "--shards", "4", "--config", str(config))
    assert out.returncode == 2 and "--shards: the local platform cannot start TLS nodes" in (
        out.stderr
    )
    assert len(secure_cluster.nodes) == 3


@pytest.fixture
def wrong_name_node(certs: Certs, tmp_path: Path) -> Iterator[str]:
    """One TLS cluster node whose certificate names another host."""
    port, files = free_port(), certs.wrong_name
    proc = subprocess.Popen(
        [SERVERS["redis"], "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", files.cert_file, "--tls-key-file", files.key_file,
         "--tls-ca-cert-file", files.ca_file, "--tls-cluster", "yes", "--cluster-enabled", "yes",
         "--cluster-config-file", str(tmp_path / "nodes.conf"), "--dir", str(tmp_path),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline and proc.poll() is None, "node did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_hostname_is_checked_unless_turned_off_with_a_warning(
    wrong_name_node: str, certs: Certs
) -> None:
    flags = tls_flags(certs.good)  # the client's own certificate is fine; the node's name is not
    checked = slotpilot("fix", "--seed", wrong_name_node, *flags)
    assert checked.returncode == 1, checked.stderr
    assert f"cannot reach {wrong_name_node}" in checked.stderr
    assert "mismatch" in checked.stderr.lower() or "hostname" in checked.stderr.lower()
    unchecked = slotpilot("fix", "--seed", wrong_name_node, *flags, "--no-check-hostname")
    assert unchecked.returncode == 0, unchecked.stderr
    assert "check_hostname is false" in unchecked.stderr
    assert "nothing to fix" in unchecked.stdout  # it read the node's topology over TLS


class Sniffer:
    """A TCP listener that keeps the first bytes of every connection, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.seen: list[bytes] = []
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    self.seen.append(conn.recv(4096))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def sniffer() -> Iterator[Sniffer]:
    s = Sniffer()
    yield s
    s.close()


def test_password_never_goes_over_plain_tcp_when_tls_is_asked_for(
    sniffer: Sniffer, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "tls.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{sniffer.address}"], password_env: SP_TLS_PW,\n'
        f'  tls: {{enabled: true, ca_file: "{certs.good.ca_file}"}}}}\n'
    )
    monkeypatch.setenv("SP_TLS_PW", PASSWORD)
    runs = [
        slotpilot("scale", "--shards", "3", "--config", str(config)),
        slotpilot("rebalance", "--seed", sniffer.address, "--tls", password=PASSWORD),
        slotpilot("fix", "--seed", sniffer.address, *tls_flags(certs.good), password=PASSWORD),
    ]
    for out in runs:
        assert out.returncode == 1 and f"cannot reach {sniffer.address}" in out.stderr
    assert sniffer.seen and all(chunk[:1] == b"\x16" for chunk in sniffer.seen if chunk)
    assert not any(PASSWORD.encode() in chunk for chunk in sniffer.seen)
    # the sniffer does see a password sent in the clear (so the check above can fail)
    plain = slotpilot("fix", "--seed", sniffer.address, password=PASSWORD)
    assert plain.returncode == 1
    assert any(PASSWORD.encode() in chunk for chunk in sniffer.seen)


def test_plan_honours_check_hostname_false_from_the_config(
    wrong_name_node: str, certs: Certs, tmp_path: Path
) -> None:
    good = certs.good
    tls = (f'tls: {{enabled: true, ca_file: "{good.ca_file}", cert_file: "{good.cert_file}", '
           f'key_file: "{good.key_file}"')  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text(f'cluster: {{seeds: ["{wrong_name_node}"], {tls}}}}}\n')
    checked = slotpilot("plan", "--config", str(config))
    assert checked.returncode == 1 and f"cannot reach {wrong_name_node}" in checked.stderr
    config.write_text(
        f'cluster: {{seeds: ["{wrong_name_node}"], {tls}, check_hostname: false}}}}\n'
    )
    unchecked = slotpilot("plan", "--config", str(config))
    assert unchecked.returncode == 0, unchecked.stderr
    assert "check_hostname is false" in unchecked.stderr and "shards:" in unchecked.stdout
