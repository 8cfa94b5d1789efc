"""The ``slotpilot`` command line: the commands, and the one place errors become exit codes.

Every command raises; :func:`main` alone turns an exception into a message and an exit
code, so no user mistake ends in a traceback: bad input exits 2 naming the flag or field,
an unreachable cluster or a failed step exits 1 with the address and the reason, and a
refusal (a gate, or another holder of the cluster's lease) exits 3. Commands that change
the topology (``scale``, ``rebalance``, ``fix``) hold the cluster's lease while they act.
The grammar (options, defaults, help) is in :mod:`controller.cliargs`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from controller.cliargs import build_parser as grammar
from controller.errors import (
    BadInput,
    CommandError,
    Unreachable,
    cause,
    exit_code,
    interrupt_on_sigterm,
)

if TYPE_CHECKING:
    from controller.config import SlotpilotConfig, TLSConfig
    from controller.topology import Connect

__all__ = ["build_parser", "main"]

log = logging.getLogger("slotpilot.cli")


# -- reaching the cluster -----------------------------------------------------------------


@dataclass(frozen=True)
class _Access:
    """How every connection of one command reaches the nodes: one place, so TLS settings
    (and with them the password) go to every connection alike, never plain TCP when the
    config or the flags say TLS."""

    username: str | None
    password: str | None
    tls: TLSConfig
    options: dict[str, Any]  # redis-py connection options, built once (one TLS warning)

    @classmethod
    def build(cls, username: str | None, password: str | None, tls: TLSConfig) -> _Access:
        options = {"username": username, "password": password, **tls.redis_options()}
        return cls(username, password, tls, options)

    def connect(self) -> Connect:
        from controller.topology import connector

        return connector(**self.options)


def _access(args: argparse.Namespace, cfg: SlotpilotConfig | None = None) -> _Access:
    """The config's cluster.* settings (if any), overridden by --user and the TLS flags;
    without a config the password is $REDISCLI_AUTH (redis-cli's convention)."""
    from controller.config import TLSConfig, resolve_password

    tls = cfg.cluster.tls if cfg is not None else TLSConfig.model_validate({})
    updates: dict[str, Any] = {}
    if args.tls or args.cacert or args.cert or args.key:
        updates["enabled"] = True
    for flag, name in (("cacert", "ca_file"), ("cert", "cert_file"), ("key", "key_file")):
        if getattr(args, flag):
            updates[name] = getattr(args, flag)
    if args.check_hostname is False:
        updates["check_hostname"] = False
    tls = tls.model_copy(update=updates)
    if not tls.enabled and args.check_hostname is False:
        raise BadInput("--no-check-hostname", "only applies with --tls")
    if cfg is None:
        return _Access.build(args.user, os.environ.get("REDISCLI_AUTH"), tls)
    return _Access.build(args.user or cfg.cluster.username, resolve_password(cfg), tls)


def _first_answering(connect: Connect, seeds: Sequence[str], access: _Access | None = None) -> str:
    """The first seed that answers PING; :class:`Unreachable` naming each one otherwise.
    With ``access`` holding a password, a seed that answers without one is warned about
    (a wrong password is otherwise silently unused by a server that has none)."""
    import redis

    reasons = []
    for seed in seeds:
        try:
            connect(seed).ping()
            if access is not None and access.password:
                _warn_if_password_unused(access, seed)
            return seed
        except (redis.RedisError, OSError) as exc:
            reasons.append(f"{seed}: {cause(exc)}" if len(seeds) > 1 else cause(exc))
    raise Unreachable(", ".join(seeds), "; ".join(reasons))


def _warn_if_password_unused(access: _Access, seed: str) -> None:
    import redis

    from controller.topology import connector

    options = {k: v for k, v in access.options.items() if k not in ("username", "password")}
    try:
        connector(timeout=5.0, **options)(seed).ping()
    except (redis.RedisError, OSError):
        return  # it needs the credentials: they are used
    print(f"warning: {seed} answers without a password: the one given ($REDISCLI_AUTH or "
          "cluster.password_env) is not checked by this cluster", file=sys.stderr)  # fmt: skip


@contextlib.contextmanager
def _lease(
    access: _Access, seed: str, command: str, required: bool = True, ttl: float = 15.0
) -> Iterator[None]:
    """Hold the cluster's lease while a command acts (renewed in the background, released
    on exit); :class:`~controller.lease.LeaseHeld` (exit 3) names a live holder. ``fix``
    passes ``required=False``: a cluster too broken to store the lease can still be fixed."""
    import redis

    from balancer import ClusterClient, ClusterError, SlotNotCovered
    from controller.lease import ClusterLease

    owner = f"slotpilot {command} on {socket.gethostname()} pid {os.getpid()}"
    client: ClusterClient | None = None
    try:
        client = ClusterClient(seed, socket_timeout=5.0, socket_connect_timeout=5.0,
                               **access.options)  # fmt: skip
        lease = ClusterLease(client, owner=owner, ttl_seconds=ttl).__enter__()  # LeaseHeld: 3
    except (ClusterError, redis.RedisError, OSError) as exc:
        if client is not None:
            client.close()
        if required and isinstance(exc, redis.exceptions.ClusterDownError | SlotNotCovered):
            from controller.topology import ClusterNotStable  # a gate: refused, exit 3

            raise ClusterNotStable([f"the cluster is down ({exc}): run `slotpilot fix`, "
                                    "or wait for its failover"]) from None  # fmt: skip
        if required:
            raise Unreachable(seed, f"cannot take the cluster's lease: {exc}") from None
        log.warning("acting without the cluster's lease (%s)", exc)
        yield
        return
    except BaseException:  # LeaseHeld, an interrupt: nothing held, nothing left open
        if client is not None:
            client.close()
        raise
    try:
        yield
    finally:
        lease.__exit__(None, None, None)
        client.close()


# -- commands ---------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from controller.demo import print_result, run_demo, run_reshard_demo

    if args.faults:
        result = run_demo(seconds=args.seconds)
        print_result(result)
        ok = not result.errors and result.keys_read_back == result.keys_written
        return 0 if ok else 1
    reshard = run_reshard_demo(max_shards=args.max_shards)
    print_result(reshard)
    return 0 if reshard.ok else 1


def _validate(args: argparse.Namespace) -> int:
    from controller.config import validate_command

    return validate_command(args.file, sys.stdout)


def _load_runnable(path: str) -> SlotpilotConfig:
    """The config, refused (exit 2) for anything ``validate`` refuses."""
    from controller.config import check_runnable, load_config

    cfg = load_config(path)
    check_runnable(cfg)
    return cfg


def _shard_nodes(cfg: SlotpilotConfig, access: _Access) -> Any:
    """The local platform's shard nodes: detached server processes (``shards.state_dir``)."""
    from controller.platform.local_nodes import ClusterAuth, ClusterStartError, local_node_source
    from controller.runner import state_dir

    connect = access.connect()
    seed = _first_answering(connect, cfg.cluster.seeds, access)
    auth = ClusterAuth(access.password, access.username) if access.password else None
    try:
        return local_node_source(connect(seed), cfg.shards.state_dir or state_dir(), auth)
    except ClusterStartError as exc:
        raise BadInput("shards.autoscale", str(exc)) from None


def _plan(args: argparse.Namespace) -> int:
    from controller.loop import Controller
    from controller.runner import assemble

    cfg = _load_runnable(args.config)
    parts = assemble(cfg, lambda: None, acting=False)
    try:
        controller = Controller(cfg, parts.platform)
        try:
            view = controller.probe_once()
            if cfg.shards.capacity.cpu_cores and controller.ready:
                # CPU is a rate: a second sample one probe interval later gives it
                time.sleep(min(cfg.probe.interval_seconds, 5.0))
                view = controller.probe_once()
            if not controller.ready:  # a plan of an unreachable cluster says nothing
                reason = view.probe.membership_error if view.probe is not None else None
                raise Unreachable(", ".join(cfg.cluster.seeds), reason or "no node answered")
            decisions = controller.plan()
            status = controller.status()
        finally:
            controller.stop()
    finally:
        parts.close()
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
    import urllib.error
    import urllib.request

    from controller.status import render_status

    base = args.url
    if base is None:
        port = 8080
        if args.config is not None:
            from controller.config import load_config

            port = load_config(args.config).http.port
        base = f"http://127.0.0.1:{port}"
    url = base.rstrip("/") + "/v1/status"
    if not url.startswith(("http://", "https://")):
        raise BadInput("--url", f"{base!r} is not an http:// or https:// URL")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise Unreachable(url, f"HTTP {exc.code} {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise Unreachable(url, cause(exc)) from None
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        sys.stdout.write(render_status(status))
    return 0


def _run(args: argparse.Namespace) -> int:
    import errno
    import signal
    import threading

    from controller.http import ControllerHTTPServer
    from controller.loop import Controller
    from controller.metrics import ControllerMetrics
    from controller.runner import assemble

    cfg = _load_runnable(args.config)
    port = cfg.http.port if args.port is None else args.port
    flag = "http.port" if args.port is None else "--port"
    metrics = ControllerMetrics()
    holder: dict[str, Any] = {}
    try:  # the port first: a port in use is reported before anything starts
        server = ControllerHTTPServer(
            args.host, port, metrics=metrics,
            ready=lambda: "c" in holder and holder["c"].ready and holder["api_up"](),
            status=lambda: holder["c"].status() | holder["extra"](),
            routing=lambda: holder["c"].routing,
            not_ready_reason=lambda: "no probe cycle has reached a node yet"
            if holder.get("api_up", lambda: True)()
            else "Kubernetes API unreachable: every target is held",
            stall_reason=lambda: holder["c"].stall_reason() if "c" in holder else None,
        )  # fmt: skip
    except OSError as exc:
        where = flag if exc.errno == errno.EADDRINUSE else f"--host/{flag}"
        reason = f"cannot listen on {args.host}:{port}: {exc.strerror or exc}"
        raise BadInput(where, reason) from None
    parts = assemble(cfg, lambda: _shard_nodes(cfg, _access_for_config(cfg)), metrics)
    holder["api_up"] = parts.api_up or (lambda: True)
    crashes = parts.crash_status  # local consumers that keep exiting non-zero
    holder["extra"] = lambda: {"consumer_crashes": crashes()} if crashes else {}
    try:
        controller = holder["c"] = Controller(
            cfg, parts.platform, metrics=metrics, nodes=parts.nodes, intent=parts.intent,
            leader=parts.leader, leader_name=parts.leader_name, events=parts.events,
        )  # fmt: skip
        parts.watch(controller.stall_reason)  # a stuck loop hands leadership back
        parts.start()
        server.start()
        log.info(json.dumps({"event": "listening", "url": server.url, "port": server.port}))
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            controller.start()
            stop.wait()
        finally:
            log.info(json.dumps({"event": "stopping"}))
            controller.stop()  # waits for a running step: never stops mid-step
    finally:
        server.stop()
        parts.close()
    return 0


def _access_for_config(cfg: SlotpilotConfig) -> _Access:
    from controller.config import resolve_password

    return _Access.build(cfg.cluster.username, resolve_password(cfg), cfg.cluster.tls)


def _local_cluster(args: argparse.Namespace) -> int:
    import signal
    import threading

    from controller.localcluster import LocalCluster

    stop = threading.Event()
    caught: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        caught.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    with LocalCluster(args.shards, args.replicas) as cluster:
        nodes = [n.address for n in cluster.nodes]
        print(json.dumps({"seed": cluster.seed, "url": cluster.url, "nodes": nodes}), flush=True)
        print("local cluster running; Ctrl-C (or SIGTERM) stops it and every node",
              file=sys.stderr, flush=True)  # fmt: skip
        stop.wait()
    # Ctrl-C is an interruption (130, as every command); SIGTERM the service's normal stop
    return 130 if signal.SIGINT in caught else 0


def _rebalance(args: argparse.Namespace) -> int:
    from controller.topology import rebalance

    access = _access(args)
    connect = access.connect()
    _first_answering(connect, [args.seed], access)
    progress = _ProgressPrinter()
    holding = contextlib.nullcontext() if args.dry_run else _lease(access, args.seed, "rebalance")
    try:
        with holding:
            plan, report = rebalance(
                connect, args.seed, engine=args.engine, threshold=args.threshold / 100,
                dry_run=args.dry_run, progress=progress,
            )  # fmt: skip
    finally:
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


def _scale(args: argparse.Namespace) -> int:
    import redis

    from controller.config import load_config
    from controller.migration import MigrationError
    from controller.platform.local_nodes import ClusterAuth, ClusterStartError, local_node_source
    from controller.runner import state_dir
    from controller.scaling import live_entries, scale_shards
    from controller.topology import read_topology

    options: dict[str, Any] = {}
    ttl = 15.0  # the cluster's lease (shards.lease_ttl_seconds with --config)
    if args.config:
        cfg = load_config(args.config)
        if cfg.shards.platform != "local":
            raise BadInput("shards.platform", "`scale` drives the local platform only")
        access = _access(args, cfg)
        seeds, replicas = list(cfg.cluster.seeds), args.replicas
        replicas = cfg.shards.replicas_per_shard if replicas is None else replicas
        workdir, engine = args.workdir or cfg.shards.state_dir, args.engine or cfg.shards.engine
        options.update(max_memory_share=cfg.shards.scale_in_max_memory_share,
                       capacity_bytes=cfg.shards.capacity.memory_bytes)  # fmt: skip
        ttl = cfg.shards.lease_ttl_seconds
    else:
        access = _access(args)
        seeds, replicas, workdir = [args.seed], args.replicas, args.workdir
        engine = args.engine or "auto"
    connect = access.connect()
    seed = _first_answering(connect, seeds, access)
    live = live_entries(read_topology(connect, seed).entries)
    primaries = sum(1 for e in live if e.is_primary)
    if replicas is None:  # adopt the cluster's own shape
        replicas = (len(live) - primaries) // max(1, primaries)
    if access.tls.enabled and args.shards > primaries:  # new nodes need server certificates
        raise BadInput("--shards", "the local platform cannot start TLS nodes yet: a TLS "
                       f"cluster of {primaries} shards can only be scaled in")  # fmt: skip
    auth = ClusterAuth(access.password, access.username) if access.password else None
    progress = _ProgressPrinter()
    try:
        # first: a cluster with nodes on another host is refused before the lease is asked
        nodes = local_node_source(connect(seed), workdir or state_dir(), auth)
        with _lease(access, seed, "scale", ttl=ttl):
            report = scale_shards(connect, seed, args.shards, nodes, replicas_per_shard=replicas,
                                  engine=engine, progress=progress, **options)  # fmt: skip
    except ValueError as exc:  # a request the cluster's shape cannot take: bad input
        raise BadInput("cannot scale", str(exc)) from None
    except (redis.RedisError, OSError, ClusterStartError, MigrationError) as exc:
        message = f"scale failed: {exc} (run the same command again to resume)"
        raise CommandError(message) from None
    finally:
        progress.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"{report.before} -> {report.after} shards in {report.seconds:.1f}s: "
              f"+{len(report.added)} / -{len(report.removed)} nodes, "
              f"{report.slots_moved} slots and {report.keys_moved} keys moved")  # fmt: skip
    return 0


def _fix(args: argparse.Namespace) -> int:
    from controller.topology import fix

    access = _access(args)
    connect = access.connect()
    _first_answering(connect, [args.seed], access)
    with _lease(access, args.seed, "fix", required=False):
        report = fix(connect, args.seed)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        changed = {k: v for k, v in asdict(report).items() if v}
        print("; ".join(f"{k}: {v}" for k, v in changed.items()) or "nothing to fix")
    return 0


_HANDLERS = {
    "demo": _demo, "run": _run, "local-cluster": _local_cluster, "rebalance": _rebalance,
    "scale": _scale, "fix": _fix, "validate": _validate, "plan": _plan, "status": _status,
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``slotpilot`` parser, wired to the commands."""
    return grammar(_HANDLERS)


# Commands that talk to Redis: their dependencies are checked before they start.
_NEEDS_REDIS = frozenset({"demo", "run", "local-cluster", "rebalance", "scale", "fix", "plan"})


def _check_environment() -> None:
    """The installed redis-py is one slotpilot supports and has what it drives (the
    seam's import check): otherwise one error, at once, instead of the same failure on
    every call of a loop."""
    from importlib.metadata import version

    from controller.errors import BrokenEnvironment

    try:
        from balancer._redis_compat import SUPPORTED_REDIS_PY, supports
    except ImportError as exc:  # RedisPyIncompatible is an ImportError, and so is a gap
        raise BrokenEnvironment(str(exc)) from None
    installed = version("redis")
    if not supports(installed):
        raise BrokenEnvironment(
            f"redis-py {installed} is not supported by slotpilot (supported: "
            f"redis{SUPPORTED_REDIS_PY}); install one, e.g. pip install 'redis{SUPPORTED_REDIS_PY}'"
        )


def _configure_logging(args: argparse.Namespace) -> None:
    """One log on stderr: info for ``run`` (its JSON event lines), warning otherwise;
    APScheduler's per-job lines only at debug."""
    from controller.logs import CollapsingHandler, formatter

    level = args.log_level or ("info" if args.verbose or args.command == "run" else "warning")
    handler = CollapsingHandler(sys.stderr)  # a repeated line is counted, not reprinted
    handler.setFormatter(formatter(args.log_format, sys.stderr))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if level != "debug":
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """``slotpilot``: parse (argparse exits 2 naming a bad flag), run, map errors to codes."""
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    if args.command not in ("run", "local-cluster"):  # those two stop on SIGTERM themselves
        interrupt_on_sigterm()
    try:
        if args.command in _NEEDS_REDIS:
            _check_environment()  # a broken install stops here, in one line
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return exit_code(exc, args.command)


if __name__ == "__main__":
    sys.exit(main())
