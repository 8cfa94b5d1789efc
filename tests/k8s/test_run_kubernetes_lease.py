"""`slotpilot run` replicas on Kubernetes and who leads. Two replicas whose clocks are
20 s apart (the emulator shifts the times each one writes, by its token): the replica
ahead never takes the healthy leader's Lease, and when a leader dies the other takes over
one lease duration later (3 s here), not one lease duration plus the skew. A leader whose
reconcile loop is stuck fails ``/healthz`` and hands the Lease over."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.k8s.emulator import KubeAPI
from tests.k8s.test_run_kubernetes import NS, Run, lease_holder, wait_until

LEASE = "coordination.k8s.io/v1/leases"


def unused_address() -> str:
    """A local port nobody listens on (bound and closed at once):
    the controller probes it and fails, which does not matter to the election."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)


def test_replicas_with_skewed_clocks_never_share_the_lease_nor_wait_out_the_skew(
    k8s_api: KubeAPI, runs: list[Run], tmp_path: Path
) -> None:
    k8s_api.skew_clock("behind", -10)
    k8s_api.skew_clock("ahead", +10)
    behind = k8s_api.write_kubeconfig(tmp_path / "behind", token="behind")
    ahead = k8s_api.write_kubeconfig(tmp_path / "ahead", token="ahead")
    config = tmp_path / "slotpilot.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{unused_address()}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.2}\n"
        "shards: {platform: kubernetes, lease_ttl_seconds: 3}\n"
        "kubernetes: {namespace: default, lease_seconds: 3, renew_deadline_seconds: 2,\n"
        "             retry_seconds: 0.5}\n"
    )
    runs.append(Run(config, behind, "slotpilot-a"))
    wait_until(lambda: lease_holder(k8s_api) == "slotpilot-a", "slotpilot-a leads")
    runs.append(Run(config, ahead, "slotpilot-b"))
    deadline = time.monotonic() + 5  # over a lease duration of the follower watching
    while time.monotonic() < deadline:
        assert lease_holder(k8s_api) == "slotpilot-a", "the follower ahead took the Lease"
        time.sleep(0.1)
    lease = k8s_api.get(LEASE, NS, "slotpilot")
    assert lease is not None and lease["spec"].get("leaseTransitions", 0) == 0

    runs[0].proc.kill()  # dies without releasing: the Lease must go unrenewed to pass
    killed = time.monotonic()
    wait_until(lambda: lease_holder(k8s_api) == "slotpilot-b", "slotpilot-b takes over", 15)
    assert time.monotonic() - killed < 3 + 2  # a lease duration, plus retry and slack

    runs.append(Run(config, behind, "slotpilot-c"))  # 20 s behind the leader now
    time.sleep(1)  # it has seen slotpilot-b's renewals
    runs[1].proc.kill()
    killed = time.monotonic()
    wait_until(lambda: lease_holder(k8s_api) == "slotpilot-c", "slotpilot-c takes over", 30)
    took = time.monotonic() - killed
    assert took < 3 + 2, f"took {took:.1f}s: the leader's clock skew was waited out"
    assert runs[2].stop() == 0


def healthz(run: Run) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"{run.url}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_wedged_reconcile_fails_healthz_and_hands_the_lease_over(
    k8s_api: KubeAPI, runs: list[Run], tmp_path: Path
) -> None:
    """The leader's reconcile hangs in an API call (60 s, its request timeout): the Lease
    threads would renew for ever. After 4 quiet intervals /healthz answers 503 and the
    Lease is handed back, so the other replica acts meanwhile."""
    config = tmp_path / "slotpilot.yaml"
    config.write_text(
        f'cluster: {{seeds: ["{unused_address()}"]}}\n'
        "probe: {interval_seconds: 0.5, timeout_seconds: 0.2, stall_cycles: 4}\n"
        "shards: {platform: kubernetes, lease_ttl_seconds: 3}\n"
        "kubernetes: {namespace: default, lease_seconds: 3, renew_deadline_seconds: 2,\n"
        "             retry_seconds: 0.5, api_timeout_seconds: 60}\n"
        "consumers:\n"
        "  - {name: worker, source: {type: redis_list, key: jobs}}\n"
    )
    leader = Run(config, k8s_api.write_kubeconfig(tmp_path / "a", token="a"), "slotpilot-a")
    runs.append(leader)
    wait_until(lambda: lease_holder(k8s_api) == "slotpilot-a", "slotpilot-a leads")
    follower = Run(config, k8s_api.write_kubeconfig(tmp_path / "b", token="b"), "slotpilot-b")
    runs.append(follower)
    assert healthz(leader)[0] == 200
    fault = k8s_api.hang_next(60, verb="GET", path="/deployments/worker/scale", token="a")
    wait_until(lambda: fault.hits == 1, "the leader's reconcile hangs", 10)
    hung = time.monotonic()
    wait_until(lambda: healthz(leader)[0] == 503, "/healthz fails", 10)
    assert time.monotonic() - hung < 4 * 0.5 + 2
    assert "no reconcile progress" in json.loads(healthz(leader)[1])["reason"]
    wait_until(lambda: lease_holder(k8s_api) == "slotpilot-b", "slotpilot-b takes over", 10)
    time.sleep(1)
    assert lease_holder(k8s_api) == "slotpilot-b"  # the stuck one does not take it back
    assert healthz(follower)[0] == 200
