"""The ``slotpilot`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from controller.demo import print_result, run_demo

    result = run_demo(seconds=args.seconds)
    print_result(result)
    ok = not result.errors and result.keys_read_back == result.keys_written
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slotpilot",
        description="Autoscaling controller and slot-aware client SDK for Redis/Valkey Cluster.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run the SDK against a local 3-shard cluster through a replica kill and hang"
    )
    demo.add_argument("--seconds", type=float, default=6.0, help="load duration (default 6)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
