"""`slotpilot rebalance` as scripts will call it: plan, move, refuse on open slots."""

from __future__ import annotations

import json
import subprocess
import sys

from balancer import ClusterClient
from controller.localcluster import LocalCluster

CLI = [sys.executable, "-m", "controller.cli"]


def test_rebalance_dry_run_then_move_then_balanced(cluster: LocalCluster) -> None:
    with ClusterClient(cluster.seed) as client:
        client.mset({f"k:{i}": i for i in range(3000)})
    cluster.add_node()
    dry = subprocess.run([*CLI, "rebalance", "--seed", cluster.seed, "--dry-run", "--json"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] and plan["slots_to_move"] == 4096 and len(plan["after"]) == 4
    assert set(plan["after"].values()) == {4096}

    run = subprocess.run([*CLI, "rebalance", "--seed", cluster.seed, "--json"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["slots_moved"] == 4096 and summary["keys_moved"] > 500
    assert summary["engine"] in ("atomic", "classic")
    again = subprocess.run([*CLI, "rebalance", "--seed", cluster.seed],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0 and "balanced: nothing to move" in again.stdout
    cluster.wait_healthy()
    with ClusterClient(cluster.seed) as client:
        assert client.mget([f"k:{i}" for i in range(3000)]) == [
            str(i).encode() for i in range(3000)
        ]


def test_rebalance_refuses_with_an_open_slot(cluster: LocalCluster) -> None:
    primaries = cluster.primaries()
    target_id = cluster.node_id(primaries[1])
    owned = [
        r
        for r in primaries[0].client().execute_command("CLUSTER", "SLOTS")
        if r[2][1] == primaries[0].port
    ]
    primaries[0].client().execute_command("CLUSTER", "SETSLOT", owned[0][0], "MIGRATING", target_id)
    result = subprocess.run([*CLI, "rebalance", "--seed", cluster.seed],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 3
    assert "refused" in result.stderr and "migrating/importing" in result.stderr


def test_fix_command_closes_an_open_slot(cluster: LocalCluster) -> None:
    primaries = cluster.primaries()
    target_id = cluster.node_id(primaries[1])
    owned = [
        r
        for r in primaries[0].client().execute_command("CLUSTER", "SLOTS")
        if r[2][1] == primaries[0].port
    ]
    primaries[0].client().execute_command("CLUSTER", "SETSLOT", owned[0][0], "MIGRATING", target_id)
    result = subprocess.run(
        [*CLI, "fix", "--seed", cluster.seed, "--json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rolled_back"] == [owned[0][0]]
    again = subprocess.run(
        [*CLI, "fix", "--seed", cluster.seed], capture_output=True, text=True, timeout=60
    )
    assert again.stdout.strip() == "nothing to fix"
    after = subprocess.run(
        [*CLI, "rebalance", "--seed", cluster.seed, "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert after.returncode == 0  # the gate opens again
