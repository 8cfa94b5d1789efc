"""The ``slotpilot`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, NoReturn

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import logging

    from controller.demo import print_result, run_demo, run_reshard_demo

    if args.faults:
        result = run_demo(seconds=args.seconds)
        print_result(result)
        ok = not result.errors and result.keys_read_back == result.keys_written
        return 0 if ok else 1
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    reshard = run_reshard_demo(max_shards=args.max_shards)
    print_result(reshard)
    return 0 if reshard.ok else 1


def _validate(args: argparse.Namespace) -> int:
    from controller.config import validate_command

    return validate_command(args.file, sys.stdout)


def _config_exit(exc: Any) -> NoReturn:
    """Exit 2 naming each bad field (a ConfigError's problems)."""
    for where, message in exc.problems:
        print(f"{where}: {message}", file=sys.stderr)
    raise SystemExit(2) from None


def _password(cfg: Any) -> str | None:
    from controller.config import ConfigError, resolve_password

    try:
        return resolve_password(cfg)
    except ConfigError as exc:
        _config_exit(exc)


def _load(path: str) -> Any:
    from controller.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _config_exit(exc)


def _controller(cfg: Any, platform: Any, **kwargs: Any) -> Any:
    from controller.config import ConfigError
    from controller.loop import Controller

    try:
        return Controller(cfg, platform, **kwargs)
    except ConfigError as exc:  # e.g. the password's env var is not set
        _config_exit(exc)


def _platform(cfg: Any) -> Any:
    from controller.platform import LocalPlatform

    if cfg.shards.platform != "local":
        print("shards.platform: only 'local' is available in this release", file=sys.stderr)
        raise SystemExit(2)
    return LocalPlatform({c.name: c.command or ["true"] for c in cfg.consumers})


def _shard_nodes(cfg: Any) -> Any:
    """The local platform's shard nodes: detached server processes (``shards.state_dir``)."""
    import redis

    from controller.localcluster import ClusterAuth, ClusterStartError, local_node_source
    from controller.topology import connector

    if cfg.cluster.tls.enabled:  # new local nodes would need server certificates
        print("shards.autoscale: the local platform cannot start TLS nodes yet", file=sys.stderr)
        raise SystemExit(2)
    password = _password(cfg)
    connect = connector(username=cfg.cluster.username, password=password)
    auth = ClusterAuth(password, cfg.cluster.username) if password else None
    for seed in cfg.cluster.seeds:
        try:
            return local_node_source(connect(seed), cfg.shards.state_dir or _state_dir(), auth)
        except (redis.RedisError, OSError):
            continue
        except ClusterStartError as exc:
            print(f"shards.autoscale: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    print(f"cluster.seeds: none answers ({', '.join(cfg.cluster.seeds)})", file=sys.stderr)
    raise SystemExit(1)


def _plan(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    platform = _platform(cfg)
    controller = _controller(cfg, platform)
    try:
        controller.probe_once()
        decisions = controller.plan()
        status = controller.status()
    finally:
        controller.stop()
        platform.close()
    if args.json:
        out = {"decisions": [asdict(d) | {"direction": d.direction} for d in decisions],
               "gates": status["gates"], "utilization": status["utilization"]}  # fmt: skip
        print(json.dumps(out, indent=2))
        return 0
    print(f"cluster utilization: {status['utilization']}, gates: "
          + (", ".join(g["name"] for g in status["gates"]) or "none"))  # fmt: skip
    for d in decisions:
        blocked = f"  [blocked: {', '.join(d.blocked_by)}]" if d.blocked_by else ""
        print(f"{d.target}: {d.current} -> {d.desired} ({d.direction}): {d.reason}{blocked}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from controller.status import render_status

    url = args.url.rstrip("/") + "/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = json.loads(response.read())
    except (OSError, ValueError) as exc:
        print(f"cannot read {url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        sys.stdout.write(render_status(status))
    return 0


def _run(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from controller.http import ControllerHTTPServer
    from controller.metrics import ControllerMetrics

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    log = logging.getLogger("slotpilot.controller")
    cfg = _load(args.config)
    platform = _platform(cfg)
    metrics = ControllerMetrics()
    nodes = _shard_nodes(cfg) if cfg.shards.autoscale else None
    controller = _controller(cfg, platform, metrics=metrics, nodes=nodes)
    port = cfg.http.port if args.port is None else args.port
    server = ControllerHTTPServer(
        args.host, port, metrics=metrics, ready=lambda: controller.ready,
        status=controller.status, routing=lambda: controller.routing,
    ).start()  # fmt: skip
    log.info(json.dumps({"event": "listening", "url": server.url, "port": server.port}))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    metrics.set_leader(True)
    try:
        controller.start()
        stop.wait()
    finally:
        log.info(json.dumps({"event": "stopping"}))
        controller.stop()  # waits for a running step: never stops mid-step
        server.stop()
        platform.close()
    return 0


def _local_cluster(args: argparse.Namespace) -> int:
    import signal
    import threading

    from controller.localcluster import LocalCluster

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with LocalCluster(args.shards, args.replicas) as cluster:
        nodes = [n.address for n in cluster.nodes]
        print(json.dumps({"seed": cluster.seed, "url": cluster.url, "nodes": nodes}), flush=True)
        stop.wait()
    return 0


def _admin_connect(args: argparse.Namespace) -> Any:
    """Connections for topology commands: ACL user from --user, password from the
    REDISCLI_AUTH environment variable (redis-cli's convention), never from argv."""
    import os

    from controller.topology import connector

    return connector(username=args.user, password=os.environ.get("REDISCLI_AUTH"))


def _rebalance(args: argparse.Namespace) -> int:
    from controller.topology import ClusterNotStable, rebalance

    progress = _ProgressPrinter()

    try:
        plan, report = rebalance(
            _admin_connect(args), args.seed, engine=args.engine, threshold=args.threshold / 100,
            dry_run=args.dry_run, progress=progress,
        )  # fmt: skip
    except ClusterNotStable as exc:
        progress.close()
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    progress.close()
    summary: dict[str, Any] = {
        "dry_run": args.dry_run,
        "slots_to_move": plan.slot_count,
        "moves": [
            {"source": m.source, "target": m.target, "slots": m.slot_count, "ranges": m.slot_ranges}
            for m in plan.moves
        ],
        "before": dict(plan.before),
        "after": dict(plan.after),
    }
    if report is not None:
        summary.update(
            engine=report.engine,
            slots_moved=report.slots,
            keys_moved=report.keys,
            seconds=round(report.seconds, 3),
            keys_per_second=round(report.keys_per_second),
        )
    if args.json:
        print(json.dumps(summary, indent=2))
    elif plan.is_empty:
        print("balanced: nothing to move")
    else:
        verb = "would move" if report is None else f"moved ({report.engine})"
        print(f"{verb} {plan.slot_count} slots in {len(plan.moves)} moves")
        if report is not None:
            print(
                f"{report.keys} keys in {report.seconds:.2f}s "
                f"({report.keys_per_second:,.0f} keys/s)"
            )
    return 0


class _ProgressPrinter:
    """Progress of a topology change: one updating line on a terminal, otherwise one JSON
    line per event (each migration batch is one) on stderr."""

    def __init__(self) -> None:
        import threading

        self.tty = sys.stderr.isatty()
        self.slots = self.keys = 0
        self._lock = threading.Lock()  # engines report from parallel source -> target pairs

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._print(event)

    def _print(self, event: dict[str, Any]) -> None:
        if not self.tty:
            sys.stderr.write(json.dumps(event) + "\n")
            sys.stderr.flush()
            return
        if event.get("event") == "moved":
            self.slots += event.get("slots", 0)
            self.keys += event.get("keys", 0)
            print(f"\r{self.slots} slots, {self.keys} keys moved", end="", file=sys.stderr)
        else:
            detail = {k: v for k, v in event.items() if k != "event"}
            print(f"\r{event.get('event')}: {detail}", file=sys.stderr)

    def close(self) -> None:
        if self.tty and self.slots:
            print(file=sys.stderr)


def _state_dir() -> str:
    import os

    default = os.path.join(os.path.expanduser("~"), ".local", "state", "slotpilot", "nodes")
    return os.environ.get("SLOTPILOT_STATE_DIR", default)


def _scale(args: argparse.Namespace) -> int:
    import os

    import redis

    from controller.localcluster import ClusterAuth, ClusterStartError, local_node_source
    from controller.scaling import live_entries, scale_shards
    from controller.topology import ClusterNotStable, connector, read_topology

    if args.shards < 1:
        print("--shards: must be >= 1", file=sys.stderr)
        return 2
    if args.config:
        cfg = _load(args.config)
        if cfg.shards.platform != "local":
            print("shards.platform: `scale` drives the local platform only", file=sys.stderr)
            return 2
        username, password = cfg.cluster.username, _password(cfg)
        seeds, replicas = list(cfg.cluster.seeds), cfg.shards.replicas_per_shard
        workdir = args.workdir or cfg.shards.state_dir
        engine = args.engine or cfg.shards.engine
    else:
        username, password = args.user, os.environ.get("REDISCLI_AUTH")
        seeds, replicas, workdir = [args.seed], args.replicas, args.workdir
        engine = args.engine or "auto"
    connect = connector(username=username, password=password)
    seed = next((s for s in seeds if _answers(connect, s)), None)
    if seed is None:
        print(f"no seed answers: {', '.join(seeds)}", file=sys.stderr)
        return 1
    if replicas is None:  # adopt the cluster's own shape
        live = live_entries(read_topology(connect, seed).entries)
        primaries = sum(1 for e in live if e.is_primary)
        replicas = (len(live) - primaries) // max(1, primaries)
    auth = ClusterAuth(password, username) if password else None
    progress = _ProgressPrinter()
    try:
        nodes = local_node_source(connect(seed), workdir or _state_dir(), auth)
        report = scale_shards(connect, seed, args.shards, nodes, replicas_per_shard=replicas,
                              engine=engine, progress=progress)  # fmt: skip
    except ClusterNotStable as exc:
        progress.close()
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        progress.close()
        print(f"cannot scale: {exc}", file=sys.stderr)
        return 2
    except (redis.RedisError, OSError, ClusterStartError) as exc:
        progress.close()
        print(f"scale failed: {exc} (run the same command again to resume)", file=sys.stderr)
        return 1
    progress.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"{report.before} -> {report.after} shards in {report.seconds:.1f}s: "
              f"+{len(report.added)} / -{len(report.removed)} nodes, "
              f"{report.slots_moved} slots and {report.keys_moved} keys moved")  # fmt: skip
    return 0


def _answers(connect: Any, address: str) -> bool:
    import redis

    try:
        return bool(connect(address).ping())
    except (redis.RedisError, OSError):
        return False


def _fix(args: argparse.Namespace) -> int:
    from dataclasses import asdict as as_dict

    import redis

    from controller.topology import fix

    try:
        report = fix(_admin_connect(args), args.seed)
    except redis.RedisError as exc:
        print(f"fix failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(as_dict(report), indent=2))
    else:
        changed = {k: v for k, v in as_dict(report).items() if v}
        print("; ".join(f"{k}: {v}" for k, v in changed.items()) or "nothing to fix")
    return 0


def _address(text: str) -> str:
    """argparse type: a HOST:PORT, checked before anything connects (exit 2 otherwise)."""
    from balancer.endpoint import parse_address

    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slotpilot",
        description="Autoscaling controller and slot-aware client SDK for Redis/Valkey Cluster.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="a local cluster scaled 3 -> 4 -> 3 shards live by the controller under load"
    )
    demo.add_argument("--max-shards", type=int, default=4, help="scale out to (default 4)")
    demo.add_argument("--verbose", action="store_true", help="controller and migration logs")
    demo.add_argument(
        "--faults", action="store_true", help="instead: the SDK through a replica kill and hang"
    )
    demo.add_argument("--seconds", type=float, default=6.0, help="--faults load duration")
    demo.set_defaults(func=_demo)

    run = commands.add_parser("run", help="run the controller (HTTP API, metrics, scaling)")
    run.add_argument("--config", required=True)
    run.add_argument(
        "--port", type=int, default=None, help="HTTP port (default: config, 8080; 0: any)"
    )
    run.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    run.set_defaults(func=_run)

    local = commands.add_parser(
        "local-cluster", help="run a local cluster on 127.0.0.1 until interrupted (prints its seed)"
    )
    local.add_argument("--shards", type=int, default=3)
    local.add_argument("--replicas", type=int, default=1)
    local.set_defaults(func=_local_cluster)

    reb = commands.add_parser(
        "rebalance", help="give every primary, empty ones included, its share of the slots"
    )
    reb.add_argument("--seed", required=True, type=_address, help="HOST:PORT of any node")
    reb.add_argument("--engine", choices=["auto", "atomic", "classic"], default="auto")
    reb.add_argument("--dry-run", action="store_true", help="show the plan, move nothing")
    reb.add_argument("--threshold", type=float, default=2.0, help="percent off share tolerated")
    reb.add_argument("--user", default=None, help="ACL user (password: $REDISCLI_AUTH)")
    reb.add_argument("--json", action="store_true")
    reb.set_defaults(func=_rebalance)

    scale = commands.add_parser(
        "scale", help="change the shard count: add or drain, forget and stop shards; resumable"
    )
    scale.add_argument("--shards", type=int, required=True, help="the shard count to reach")
    where = scale.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="controller config (seeds, credentials, replicas)")
    where.add_argument("--seed", type=_address, help="HOST:PORT of a node of a cluster to adopt")
    scale.add_argument(
        "--engine", choices=["auto", "atomic", "classic"], default=None,
        help="default: the config's shards.engine, else auto",
    )  # fmt: skip
    scale.add_argument(
        "--replicas", type=int, default=None, help="replicas per shard (default: the cluster's)"
    )
    scale.add_argument(
        "--workdir", default=None, help="where new server processes live ($SLOTPILOT_STATE_DIR)"
    )
    scale.add_argument("--user", default=None, help="ACL user (password: $REDISCLI_AUTH)")
    scale.add_argument("--json", action="store_true")
    scale.set_defaults(func=_scale)

    fixer = commands.add_parser(
        "fix", help="close open slots, cover uncovered slots, forget ghost nodes"
    )
    fixer.add_argument("--seed", required=True, type=_address, help="HOST:PORT of any node")
    fixer.add_argument("--user", default=None, help="ACL user (password: $REDISCLI_AUTH)")
    fixer.add_argument("--json", action="store_true")
    fixer.set_defaults(func=_fix)

    validate = commands.add_parser("validate", help="check a config file (exit 2 on errors)")
    validate.add_argument("file")
    validate.set_defaults(func=_validate)

    plan = commands.add_parser("plan", help="dry run: what the controller would do now and why")
    plan.add_argument("--config", required=True)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=_plan)

    status = commands.add_parser("status", help="a running controller's view of the cluster")
    status.add_argument("--url", default="http://127.0.0.1:8080")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
