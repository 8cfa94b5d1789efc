"""Where the local platform keeps its nodes when the config names no state_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.runner import state_dir


def test_state_dir_follows_slotpilot_then_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SLOTPILOT_STATE_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == str(tmp_path / "home" / ".local" / "state" / "slotpilot" / "nodes")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == str(tmp_path / "xdg" / "slotpilot" / "nodes")
    monkeypatch.setenv("SLOTPILOT_STATE_DIR", str(tmp_path / "mine"))
    assert state_dir() == str(tmp_path / "mine")


def test_the_suite_does_not_use_the_users_state_directory() -> None:
    from tests.conftest import USER_STATE

    assert not state_dir().startswith(USER_STATE)
