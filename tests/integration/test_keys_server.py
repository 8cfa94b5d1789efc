"""The key locator agrees with the server's own ``COMMAND GETKEYS`` on real servers (both
flavors, RESP2 and RESP3), for every form it decides without asking."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from balancer.keys import KeyLocator
from tests.unit.test_keys import CASES

pytestmark = pytest.mark.integration


def _text(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


@pytest.mark.parametrize("protocol", [2, 3])
def test_locator_agrees_with_command_getkeys(standalone_port: int, protocol: int) -> None:
    client = redis.Redis(port=standalone_port, protocol=protocol)
    asked: list[tuple[Any, ...]] = []

    def ask(pieces: tuple[Any, ...]) -> list[Any]:
        asked.append(pieces)
        return list(client.command_getkeys(*pieces))

    conn = redis.Connection(port=standalone_port, protocol=protocol)
    conn.send_command("COMMAND")
    locator = KeyLocator(lambda: None, ask)
    locator.install(conn.read_response())
    conn.disconnect()
    checked = 0
    for args, _ in CASES:
        words = (*str(args[0] if isinstance(args[0], str) else args[0].decode()).split(), *args[1:])
        try:
            truth = client.command_getkeys(*words)
        except redis.ResponseError as exc:
            assert any(m in str(exc) for m in ("no key arguments", "Invalid", "wrong number")), (
                args,
                exc,
            )
            truth = []
        if args[0] in ("PUBLISH", "SPUBLISH", "PUBSUB"):
            continue  # channels route like keys for the client; the server calls them none
        assert _text(locator.keys(args)) == _text(truth), args
        checked += 1
    assert checked > 25 and asked == []  # every form above was decided from the table
    assert _text(locator.keys(("SORT", "k", "STORE", "dst"))) == ["k", "dst"]
    assert asked == [("SORT", "k", "STORE", "dst")]
    client.close()
