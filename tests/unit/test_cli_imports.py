"""A ``slotpilot`` command loads only what it uses: ``--help`` and ``--version`` load no
client library, and ``rebalance`` none of the controller's service stack (Kubernetes,
metrics, the scheduler). Each case runs in a fresh interpreter and reads ``sys.modules``;
nothing here connects anywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLIENT_LIBRARIES = ["apscheduler", "kubernetes", "prometheus_client", "pydantic", "redis",
                    "redis.asyncio"]  # fmt: skip
SERVICE_STACK = ["apscheduler", "kubernetes", "prometheus_client"]

# runs `main(argv)` with its output swallowed, then prints which of `watch` were imported
_RUN = """
import contextlib, io, json, sys
from controller.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main({argv!r})
    except SystemExit:
        pass
print(json.dumps([m for m in {watch!r} if m in sys.modules]))
"""

# `rebalance` dispatched for real, up to where it first touches the network: that seam
# refuses, so the handler's imports, its connection setup and the error path all run
_REBALANCE = """
import contextlib, io, json, sys
from controller import cli
from controller.errors import Unreachable

def refuse(connect, seeds):
    raise Unreachable(", ".join(seeds), "refused by the test")

cli._first_answering = refuse
with contextlib.redirect_stderr(io.StringIO()):
    code = cli.main(["rebalance", "--seed", "127.0.0.1:7000", "--threshold", "5"])
loaded = [m for m in {watch!r} if m in sys.modules]
ran = "controller.topology" in sys.modules
print(json.dumps({{"code": code, "loaded": loaded, "ran": ran}}))
"""


def _python(code: str) -> object:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["rebalance", "--help"], ["scale", "--help"]]
)
def test_help_and_version_load_no_client_library(argv: list[str]) -> None:
    assert _python(_RUN.format(argv=argv, watch=CLIENT_LIBRARIES)) == []


def test_rebalance_loads_no_service_stack() -> None:
    result = _python(_REBALANCE.format(watch=SERVICE_STACK))
    assert result == {"code": 1, "loaded": [], "ran": True}


def test_importing_the_package_loads_nothing_until_a_name_is_used() -> None:
    code = """
import json, sys, controller
heavy = [m for m in sys.modules if m.startswith(("redis", "pydantic", "balancer"))]
before = "controller.rebalance" in sys.modules
controller.plan_rebalance
print(json.dumps([heavy, before, "controller.rebalance" in sys.modules]))
"""
    assert _python(code) == [[], False, True]


def test_lazy_exports_are_exactly_the_public_api() -> None:
    import controller

    assert sorted(controller._MODULE_OF) == sorted(controller.__all__)
    assert set(controller.__all__) <= set(dir(controller))
    with pytest.raises(AttributeError, match="no attribute 'LocalCluster'"):
        controller.LocalCluster  # noqa: B018  # the harness is not API
