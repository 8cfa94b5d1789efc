"""Block times are read from a blocking command's own arguments."""

from __future__ import annotations

import math
from typing import Any

import pytest

from balancer.blocking import block_seconds


@pytest.mark.parametrize(
    ("args", "seconds"),
    [
        (("BLPOP", "a", "b", 1), 1.0),
        (("BRPOP", "a", b"2.5"), 2.5),
        (("BLPOP", "a", 0), math.inf),  # 0 blocks forever
        (("BZPOPMIN", "z", "0.1"), 0.1),
        (("BLMOVE", "a", "b", "LEFT", "RIGHT", 3), 3.0),
        (("BRPOPLPUSH", "a", "b", 4), 4.0),
        (("BLMPOP", 5, 2, "a", "b", "LEFT"), 5.0),
        (("BZMPOP", "0.5", 1, "z", "MIN"), 0.5),
        (("XREAD", "COUNT", 1, "BLOCK", 1500, "STREAMS", "s", "$"), 1.5),
        (("XREADGROUP", "GROUP", "g", "c", "block", 0, "STREAMS", "s", ">"), math.inf),
        (("XREAD", "STREAMS", "s", "0"), None),  # no BLOCK: answers at once
        (("WAIT", 1, 250), 0.25),  # milliseconds
        (("WAITAOF", 1, 0, 0), math.inf),
        (("GET", "a"), None),
        (("BLPOP", "a", "soon"), None),  # malformed: the server will say so
        (("XREAD", "BLOCK"), None),
    ],
)
def test_block_seconds(args: tuple[Any, ...], seconds: float | None) -> None:
    assert block_seconds(args) == seconds
