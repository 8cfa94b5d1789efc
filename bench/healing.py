"""Self-healing on Kubernetes: from a rescheduled replica pod Ready to every shard with its
replica again, with `slotpilot run` (platform kubernetes) against the emulated API and
the kubelet fixture's real server pods (3 shards x 1 replica, node timeout 2 s).

Goal: recovery in under 5 s. Run: .venv/bin/python -m bench.healing [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import emit, log, machine
from tests.k8s.emulator import KubeAPI
from tests.k8s.kubelet import Kubelet
from tests.k8s.test_run_kubernetes import (
    Run,
    healing_config,
    healthy_replicas,
    is_replica,
    lease_holder,
    six_pods_three_shards,
    wait_until,
)


def one_round(workdir: Path) -> tuple[float, float]:
    """(seconds from the new pod Ready to the shard healed, seconds from the kill)."""
    api = KubeAPI().start()
    kubelet = Kubelet(api, workdir / "kubelet").start()
    run: Run | None = None
    try:
        _, addresses = six_pods_three_shards(api, kubelet)
        config = healing_config(workdir, addresses, forget_after=60)
        run = Run(config, api.write_kubeconfig(workdir / "kubeconfig"), "bench")
        wait_until(lambda: lease_holder(api) == "bench", "the leader")
        killed = time.monotonic()
        moved = kubelet.reschedule("cache-5")
        wait_until(lambda: kubelet.member("cache-5").ready, "the new pod Ready")
        ready = time.monotonic()
        new = f"127.0.0.1:{moved.port}"
        wait_until(lambda: sorted(healthy_replicas(addresses[0]).values()) == [1, 1, 1]
                   and is_replica(addresses[0], new), "healed", 120)  # fmt: skip
        healed = time.monotonic()
        return healed - ready, healed - killed
    finally:
        if run is not None:
            run.stop()
        kubelet.stop()
        api.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from_ready, from_kill = [], []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="slotpilot-heal-") as tmp:
            a, b = one_round(Path(tmp))
        log(f"round {i + 1}: {a:.2f} s from Ready, {b:.2f} s from the kill")
        from_ready.append(a)
        from_kill.append(b)
    emit("healing", rounds=args.rounds,
         median_seconds_from_ready=round(statistics.median(from_ready), 2),
         max_seconds_from_ready=round(max(from_ready), 2),
         median_seconds_from_kill=round(statistics.median(from_kill), 2),
         **machine())  # fmt: skip


if __name__ == "__main__":
    main()
