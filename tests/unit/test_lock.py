"""requirements.lock (what make, CI and the image install) pins every package exactly, and
each pin satisfies what pyproject declares: a lock left stale by a pyproject change fails
here, before anyone installs it (`make lock` refreshes it)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_every_declared_requirement_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in ("local", "test", "dev"):
        declared += project["optional-dependencies"][extra]
    pins = locked()
    checked = 0
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "slotpilot":
            continue  # the dev extra includes the test extra
        assert name in pins, f"{requirement.name} is declared but not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pins[name]}, outside {text!r}: "
            "run `make lock`"
        )
        checked += 1
    assert checked >= 20


def test_the_lock_is_the_one_make_lock_writes() -> None:
    head = (ROOT / "requirements.lock").read_text().splitlines()[:3]
    assert any("make lock" in line for line in head), head
