"""`slotpilot --version` names slotpilot's version and those of Python and the libraries
that decide its behaviour, as their installed metadata says, through the real entry point."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "controller.cli"]
SCRIPT = Path(sys.executable).parent / "slotpilot"  # the console script, where installed


def _installed(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


@pytest.mark.parametrize(
    "cli",
    [
        pytest.param(CLI, id="python -m controller.cli"),
        pytest.param(
            [str(SCRIPT)], id="slotpilot",
            marks=pytest.mark.skipif(not os.access(SCRIPT, os.X_OK), reason="not installed"),
        ),
    ],
)  # fmt: skip
def test_version_names_each_package_with_its_installed_version(cli: list[str]) -> None:
    out = subprocess.run([*cli, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    expected = (
        f"slotpilot {_installed('slotpilot')} (Python {platform.python_version()}, "
        f"redis-py {_installed('redis')}, pydantic {_installed('pydantic')}, "
        f"kubernetes {_installed('kubernetes')})\n"
    )
    assert out.stdout == expected


def test_a_package_that_is_not_installed_is_named_so() -> None:
    from controller.cliargs import package_version

    assert package_version("slotpilot-no-such-distribution", "not installed") == "not installed"
    assert package_version("slotpilot") == _installed("slotpilot")
