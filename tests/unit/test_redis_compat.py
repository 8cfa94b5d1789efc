"""The one module that touches redis-py internals: what it checks at import, the error it
raises when the installed redis-py lacks something, and the range it names."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from balancer import _redis_compat
from balancer._redis_compat import SUPPORTED_REDIS_PY, RedisPyIncompatible, missing_members


def test_the_installed_redis_py_has_everything_we_drive() -> None:
    assert missing_members() == []


def test_a_missing_member_is_named_with_the_version_and_the_supported_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Stripped:
        _reader = None  # no _writer, no _close()

    monkeypatch.setattr(_redis_compat, "Connection", Stripped)
    missing = missing_members()
    assert missing == ["Connection._writer", "Connection._close()"]
    error = RedisPyIncompatible(missing)
    from importlib.metadata import version

    text = str(error)
    assert f"redis-py {version('redis')}" in text and f"redis{SUPPORTED_REDIS_PY}" in text
    assert "Connection._writer, Connection._close()" in text
    assert isinstance(error, ImportError)


def test_the_supported_range_is_the_one_pyproject_declares() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = [d for d in pyproject["project"]["dependencies"] if d.startswith("redis")]
    assert declared == [f"redis{SUPPORTED_REDIS_PY}"]


def test_supports_reads_the_declared_range() -> None:
    from balancer._redis_compat import supports

    assert supports("8.0.0") and supports("8.2.0") and supports("8.10.1rc1")
    assert not supports("7.4.1") and not supports("9.0.0") and not supports("garbage")
