"""The ``slotpilot`` command line's grammar: every command and option, its default, its help.

Kept apart from the commands (:mod:`controller.cli`) so each stays readable. The argparse
types here check values (``HOST:PORT``, ports, counts, percentages, readable files)
before anything connects, so a bad value exits 2 with argparse's message naming the flag.
Every option has help text, and the help shows each default.

Nothing here imports redis-py, pydantic or package metadata at import time: building the
parser is all ``slotpilot --help`` does, and it should answer at once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "LOG_LEVELS",
    "address",
    "build_parser",
    "http_port",
    "int_at_least",
    "package_version",
    "percent",
    "positive_float",
    "readable_file",
    "version_text",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
Handler = Callable[[argparse.Namespace], int]


def address(text: str) -> str:
    """A ``HOST:PORT`` (``[v6]:PORT``), the one parser of addresses."""
    from balancer.endpoint import parse_address  # importing balancer loads redis-py

    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def http_port(text: str) -> int:
    """A TCP port to listen on: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range 0-65535 (0: any free port)")
    return port


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= ``low``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    check.__name__ = f"integer >= {low}"  # argparse names the type in its messages
    return check


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def percent(text: str) -> float:
    """A percentage in [0, 100]."""
    value = _number(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text}")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def readable_file(text: str) -> str:
    """A file this process can read (certificates, keys)."""
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read file {text!r}")
    return text


# what --version names besides slotpilot: (label, distribution) of what decides its behaviour
_DEPENDENCIES = (("redis-py", "redis"), ("pydantic", "pydantic"), ("kubernetes", "kubernetes"))


def package_version(distribution: str = "slotpilot", missing: str = "unknown") -> str:
    """``distribution``'s installed version, read from its metadata (the package is never
    imported); ``missing`` if it is not installed (for slotpilot: a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return missing


def version_text() -> str:
    """What ``--version`` prints: slotpilot's version, Python's, and its dependencies'."""
    import platform

    found = [f"{label} {package_version(name, 'not installed')}" for label, name in _DEPENDENCIES]
    return f"slotpilot {package_version()} (Python {platform.python_version()}, {', '.join(found)})"


class _Version(argparse.Action):
    """``--version``, its text built only when asked for (``--help`` reads no metadata) and
    printed as is: argparse's own version action would wrap it at the terminal's width."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: str | None = None) -> None:  # fmt: skip
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(version_text())
        parser.exit()


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _common() -> argparse.ArgumentParser:
    """Options every command takes: how much to log."""
    common = argparse.ArgumentParser(add_help=False)
    logs = common.add_argument_group("logging")
    logs.add_argument(
        "--log-level", choices=LOG_LEVELS, default=None,
        help="log level (default: info for run, warning for the other commands; "
        "APScheduler's per-job lines only at debug)",
    )  # fmt: skip
    logs.add_argument(
        "--log-format", choices=("auto", "json", "text"), default="auto",
        help="json: one object a line (ts, level, logger, event, fields); text: one readable "
        "line; auto: text on a terminal, else json (default)",
    )  # fmt: skip
    logs.add_argument("-v", "--verbose", action="store_true", help="same as --log-level info")
    return common


def _connection_flags(parser: argparse.ArgumentParser, with_config: bool = False) -> None:
    """How a command that connects reaches the nodes: ACL user, password, TLS."""
    about = "The password comes from $REDISCLI_AUTH (redis-cli's convention), never from argv."
    if with_config:
        about += " With --config, its cluster.* settings apply; these flags override them."
    group = parser.add_argument_group("connection", about)
    group.add_argument("--user", default=None, help="ACL user name")
    group.add_argument("--tls", action="store_true", default=None, help="connect over TLS")
    group.add_argument(
        "--cacert", type=readable_file, default=None, help="CA bundle for the nodes (implies --tls)"
    )
    group.add_argument(
        "--cert", type=readable_file, default=None, help="client certificate (implies --tls)"
    )
    group.add_argument("--key", type=readable_file, default=None, help="client key (implies --tls)")
    group.add_argument(
        "--no-check-hostname", dest="check_hostname", action="store_false", default=None,
        help="verify certificates but do not match them to the node's address (warned)",
    )  # fmt: skip


def build_parser(handlers: Mapping[str, Handler]) -> argparse.ArgumentParser:
    """The whole grammar; ``handlers`` maps each command name to its function."""
    common = [_common()]
    sub: dict[str, Any] = {"parents": common, "formatter_class": _Formatter}
    parser = argparse.ArgumentParser(
        prog="slotpilot",
        description="Autoscaling controller and slot-aware client SDK for Redis/Valkey Cluster.",
        epilog="Exit codes: 0 done, 1 failed (unreachable cluster, failed step), "
        "2 bad input (the flag or field is named), 3 refused (a gate or another holder "
        "of the cluster's lease).",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action=_Version, help="show program's version number and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="a local cluster scaled 3 -> 4 -> 3 shards live by the controller under load",
        **sub,
    )  # fmt: skip
    demo.add_argument("--max-shards", type=int_at_least(4), default=4, help="scale out to")
    demo.add_argument(
        "--faults", action="store_true", help="instead: the SDK through a replica kill and hang"
    )
    demo.add_argument(
        "--seconds", type=positive_float, default=6.0, help="--faults: load duration in seconds"
    )

    run = commands.add_parser("run", help="run the controller (HTTP API, metrics, scaling)", **sub)
    run.add_argument("--config", required=True, help="controller config file (YAML)")
    run.add_argument(
        "--port", type=http_port, default=None,
        help="HTTP port; 0 picks a free one (default: the config's http.port, 8080)",
    )  # fmt: skip
    run.add_argument("--host", default="127.0.0.1", help="HTTP bind address")

    local = commands.add_parser(
        "local-cluster",
        help="run a local cluster on 127.0.0.1 until interrupted (prints its seed)",
        **sub,
    )  # fmt: skip
    local.add_argument("--shards", type=int_at_least(1), default=3, help="primaries")
    local.add_argument("--replicas", type=int_at_least(0), default=1, help="replicas per primary")

    reb = commands.add_parser(
        "rebalance", help="give every primary, empty ones included, its share of the slots", **sub
    )
    reb.add_argument("--seed", required=True, type=address, help="HOST:PORT of any node")
    reb.add_argument(
        "--engine", choices=["auto", "atomic", "classic"], default="auto", help="slot migration"
    )
    reb.add_argument("--dry-run", action="store_true", help="show the plan, move nothing")
    reb.add_argument(
        "--threshold", type=percent, default=2.0,
        help="percent off its share a primary may be before slots move (0-100)",
    )  # fmt: skip
    reb.add_argument("--json", action="store_true", help="print the summary as JSON")
    _connection_flags(reb)

    scale = commands.add_parser(
        "scale", help="change the shard count: add or drain, forget and stop shards; resumable",
        **sub,
    )  # fmt: skip
    scale.add_argument("--shards", type=int_at_least(1), required=True, help="shards to reach")
    where = scale.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="controller config (seeds, credentials, TLS, replicas)")
    where.add_argument("--seed", type=address, help="HOST:PORT of a node of a cluster to adopt")
    scale.add_argument(
        "--engine", choices=["auto", "atomic", "classic"], default=None,
        help="slot migration (default: the config's shards.engine, else auto)",
    )  # fmt: skip
    scale.add_argument(
        "--replicas", type=int_at_least(0), default=None,
        help="replicas per shard (default: the config's, else the cluster's own)",
    )  # fmt: skip
    scale.add_argument(
        "--workdir", default=None,
        help="where new server processes live (default: shards.state_dir, $SLOTPILOT_STATE_DIR "
        "or ~/.local/state/slotpilot/nodes)",
    )  # fmt: skip
    scale.add_argument("--json", action="store_true", help="print the report as JSON")
    _connection_flags(scale, with_config=True)

    fixer = commands.add_parser(
        "fix", help="close open slots, cover uncovered slots, forget ghost nodes", **sub
    )
    fixer.add_argument("--seed", required=True, type=address, help="HOST:PORT of any node")
    fixer.add_argument("--json", action="store_true", help="print the report as JSON")
    _connection_flags(fixer)

    validate = commands.add_parser(
        "validate", help="check a config file as run would (exit 2 naming each bad field)", **sub
    )
    validate.add_argument("file", help="controller config file (YAML)")

    plan = commands.add_parser(
        "plan", help="dry run: what the controller would do now and why", **sub
    )
    plan.add_argument("--config", required=True, help="controller config file (YAML)")
    plan.add_argument("--json", action="store_true", help="print decisions and gates as JSON")

    status = commands.add_parser("status", help="a running controller's view of the cluster", **sub)
    status.add_argument(
        "--url", default=None,
        help="the controller's HTTP URL (default: http://127.0.0.1:PORT, PORT from --config's "
        "http.port, else 8080)",
    )  # fmt: skip
    status.add_argument(
        "--config", type=readable_file, default=None,
        help="the controller's config file: its http.port is where to ask",
    )  # fmt: skip
    status.add_argument("--json", action="store_true", help="print the raw status JSON")

    for name, command in commands.choices.items():
        command.set_defaults(func=handlers[name])
    return parser
