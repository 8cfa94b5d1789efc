"""Key extraction from recorded ``COMMAND`` replies of both servers, RESP2 and RESP3, no
sockets: fixed positions, key specs (index and keyword searches, ranges and ``numkeys``),
sub-commands, pub/sub channels, and the forms only a server can answer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from balancer.keys import KeyLocator, NeedsServer, parse_command_table

DATA = Path(__file__).parent.parent / "data"
REPLIES = [
    f"{server}-{protocol}" for server in ("valkey", "redis") for protocol in ("resp2", "resp3")
]


def recorded(server: str, protocol: str) -> Any:
    return json.loads(gzip.decompress((DATA / f"command_{server}.json.gz").read_bytes()))[protocol]


@pytest.fixture(params=REPLIES)
def locator(request: pytest.FixtureRequest) -> KeyLocator:
    server, protocol = request.param.split("-")
    locator = KeyLocator()
    locator.install(recorded(server, protocol))
    return locator


# (command, expected keys): forms whose keys the table alone decides.
CASES: list[tuple[tuple[Any, ...], list[Any]]] = [
    (("GET", "a"), ["a"]),
    ((b"get", b"a"), [b"a"]),
    (("SET", "a", "1", "EX", 10), ["a"]),
    (("MSET", "a", "1", "b", "2"), ["a", "b"]),
    (("MGET", "a", "b", "c"), ["a", "b", "c"]),
    (("DEL", "a", "b"), ["a", "b"]),
    (("RENAME", "a", "b"), ["a", "b"]),
    (("LMOVE", "src", "dst", "LEFT", "RIGHT"), ["src", "dst"]),
    (("BLPOP", "l1", "l2", 5), ["l1", "l2"]),
    (("PING",), []),
    (("DBSIZE",), []),
    (("EVAL", "return 1", 2, "x", "y", "arg"), ["x", "y"]),
    (("EVAL", "return 1", "2", "x", "y"), ["x", "y"]),
    (("EVALSHA", "a" * 40, 0, "arg"), []),
    (("FCALL", "f", 1, "k", "v"), ["k"]),
    (("ZUNIONSTORE", "dst", 2, "a", "b", "WEIGHTS", 1, 2), ["dst", "a", "b"]),
    (("ZINTERCARD", 2, "a", "b", "LIMIT", 5), ["a", "b"]),
    (("LMPOP", 2, "l1", "l2", "LEFT"), ["l1", "l2"]),
    (("BZMPOP", 1, 2, "z1", "z2", "MIN"), ["z1", "z2"]),
    (("XREAD", "COUNT", 2, "STREAMS", "s1", "s2", "0", "0"), ["s1", "s2"]),
    (("XREAD", "streams", "s1", "$"), ["s1"]),
    (("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s1", ">"), ["s1"]),
    (("XINFO", "STREAM", "s"), ["s"]),
    (("XINFO STREAM", "s"), ["s"]),
    (("OBJECT", "ENCODING", "k"), ["k"]),
    (("MEMORY", "USAGE", "k"), ["k"]),
    (("CONFIG", "GET", "maxmemory"), []),
    (("CLUSTER", "KEYSLOT", "k"), []),
    (("XINFO", "NOSUCHSUB", "s"), []),
    (("PUBLISH", "ch", "msg"), ["ch"]),
    (("SPUBLISH", "ch", "msg"), ["ch"]),
    (("PUBSUB", "NUMSUB", "a", "b"), ["a", "b"]),
    (("PUBSUB", "SHARDNUMSUB", "a"), ["a"]),
]


@pytest.mark.parametrize(
    ("args", "expected"), CASES, ids=[" ".join(map(str, c[0]))[:40] for c in CASES]
)
def test_keys_from_the_table_alone(
    locator: KeyLocator, args: tuple[Any, ...], expected: list[Any]
) -> None:
    assert locator.keys(args) == expected


@pytest.mark.parametrize(
    "args",
    [
        ("SORT", "k", "BY", "w_*", "STORE", "dst"),  # specs say "unknown": the server decides
        ("MIGRATE", "h", 6379, "", 0, 5000, "KEYS", "a", "b"),  # incomplete spec
        ("EVAL", "return 1", "-1"),  # numkeys the server rejects: it says why
        ("EVAL", "return 1", "02", "a", "b"),
        ("EVAL", "return 1", 3, "a"),  # fewer keys than numkeys
        ("ZUNIONSTORE", "dst"),  # below the arity
    ],
)
def test_what_the_table_cannot_decide_is_asked_of_a_server(
    locator: KeyLocator, args: tuple[Any, ...]
) -> None:
    with pytest.raises(NeedsServer) as info:
        locator.keys(args)
    assert info.value.pieces == args


def test_a_server_answer_is_used_and_nothing_is_asked_for_known_forms() -> None:
    asked: list[tuple[Any, ...]] = []
    loads: list[int] = []

    def load() -> Any:
        loads.append(1)
        return recorded("valkey", "resp2")

    def ask(pieces: tuple[Any, ...]) -> list[Any]:
        asked.append(pieces)
        return ["k", "dst"]

    locator = KeyLocator(load, ask)
    assert locator.keys(("SORT", "k", "STORE", "dst")) == ["k", "dst"]
    assert asked == [("SORT", "k", "STORE", "dst")]
    for _ in range(3):
        assert locator.keys(("MSET", "a", 1, "b", 2)) == ["a", "b"]
    assert len(asked) == 1 and loads == [1]


def test_an_unknown_command_reloads_the_table_once_then_fails_clearly() -> None:
    loads: list[int] = []

    def load() -> Any:
        loads.append(1)
        return recorded("redis", "resp3")

    locator = KeyLocator(load, lambda pieces: [])
    with pytest.raises(redis.RedisError, match="NOSUCHCMD is not in the server's COMMAND table"):
        locator.keys(("NOSUCHCMD", "a"))
    assert len(loads) == 1  # loaded for the first look-up; a re-read waits for the gap


def test_readonly_follows_the_servers_flags(locator: KeyLocator) -> None:
    assert locator.readonly("GET") and locator.readonly(b"xrange") and locator.readonly("PFCOUNT")
    assert not locator.readonly("SET") and not locator.readonly("EVAL")
    assert not locator.readonly("NOSUCHCMD")


def test_readonly_is_no_when_the_table_cannot_be_read() -> None:
    def load() -> Any:
        raise redis.ConnectionError("refused")

    locator = KeyLocator(load, lambda pieces: [])
    assert not locator.readonly("SOMEMODULE.READ")
    assert locator.readonly("GET")  # redis-py's list of read commands needs no server


@pytest.mark.parametrize("server", ["valkey", "redis"])
def test_both_protocols_give_the_same_table(server: str) -> None:
    two = parse_command_table(recorded(server, "resp2"))
    three = parse_command_table(recorded(server, "resp3"))
    assert two.keys() == three.keys() and len(two) > 200
    for name, info in two.items():
        other = three[name]
        assert (info.arity, info.flags, info.first, info.last, info.step) == (
            other.arity, other.flags, other.first, other.last, other.step,
        ), name  # fmt: skip
        assert (
            len(info.key_specs) == len(other.key_specs)
            and info.subcommands.keys() == other.subcommands.keys()
        )


@pytest.mark.parametrize("reply", [None, b"ERR", [["get"]], [["get", "x", [], 1, 1, 1]]])
def test_a_malformed_reply_is_a_data_error(reply: Any) -> None:
    with pytest.raises(redis.DataError):
        parse_command_table(reply)
