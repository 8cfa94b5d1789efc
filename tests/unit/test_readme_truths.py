"""What README.md says that other files decide: the Kubernetes floor (the chart's
kubeVersion, the manifests' features), and no path of one machine in sample output."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_kubernetes_floor_is_the_charts() -> None:
    chart = yaml.safe_load((ROOT / "helm" / "slotpilot" / "Chart.yaml").read_text())
    floor = re.fullmatch(r">=(\d+\.\d+)\.0-0", chart["kubeVersion"])
    assert floor is not None
    assert f"Requires Kubernetes ≥ {floor[1]}" in README
    # whenScaled: Retain (the example StatefulSet) is on by default from 1.27
    example = (ROOT / "deploy" / "examples" / "redis-cluster" / "statefulset.yaml").read_text()
    assert "persistentVolumeClaimRetentionPolicy" in example
    assert tuple(int(p) for p in floor[1].split(".")) >= (1, 27)


def test_no_machine_specific_paths() -> None:
    for marker in ("/work/", "/root/", "/home/", "/Users/"):
        assert marker not in README, marker
