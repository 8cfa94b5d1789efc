"""The plan of a pipeline: commands grouped per node, one round trip each, and what to
make of each node's answers; without I/O.

A driver (:mod:`balancer.sync.pipeline`, :mod:`balancer.aio.pipeline`) builds a
:class:`BatchPlan` from the queued commands and their keys, sends each of
:attr:`BatchPlan.batches` in one write, hands every node's replies (and its failure, if
the connection broke) to :meth:`BatchPlan.answered`, then re-runs alone, in order, the
commands :meth:`BatchPlan.pending` names (redirections, TRYAGAIN/CLUSTERDOWN, keyless
commands, unanswered reads, commands behind an open breaker), through the client's
single-command path, which handles all of those.

The rules, once for both clients: read-only commands go to one reader lease per shard
(as ``read_from`` says); a primary with an open breaker is not batched (its commands
fail fast alone); a node's failure counts against its breaker unless it was a leased
reader (the lease's check-in counts it) or the connection was refused; an unanswered
write whose batch left becomes :class:`~balancer.core.errors.OutcomeUnknown` in its
place, never re-sent; a NOSCRIPT answer to a registered script is loaded and re-run (it
did not run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic

from redis.commands import READ_COMMANDS
from redis.exceptions import AskError, ClusterDownError, NoScriptError, TryAgainError

from balancer.core.breaker import CLOSED
from balancer.core.errors import NoHealthyEndpoint, OutcomeUnknown, never_sent
from balancer.core.router import Member, Router
from balancer.core.routes import RouteTable, T

__all__ = ["PENDING", "BatchPlan", "Command"]

Command = tuple[tuple[Any, ...], dict[str, Any]]
_RETRY_ON_OWN = (AskError, TryAgainError, ClusterDownError)  # MovedError is an AskError
PENDING: Any = object()  # a result still to come (re-run alone)
_Lease = tuple[Router, Member, bool]


class BatchPlan(Generic[T]):
    """One pipeline's commands per node. ``keys[i]``: command ``i``'s keys (empty: it
    has none and runs alone); ``slot_of(name, keys)`` raises for keys of several slots."""

    def __init__(
        self,
        table: RouteTable[T],
        commands: Sequence[Command],
        keys: Sequence[Sequence[Any]],
        slot_of: Callable[[Any, Sequence[Any]], int],
    ) -> None:
        self.table = table
        self.commands = commands
        self.results: list[Any] = [PENDING] * len(commands)
        self.batches: dict[str, tuple[T, list[int]]] = {}
        self.noscript: list[tuple[int, NoScriptError]] = []
        self._leases: dict[int, _Lease | None] = {}
        self._failed: dict[str, BaseException] = {}
        for index, ((args, _), names) in enumerate(zip(commands, keys, strict=True)):
            if not names:
                continue  # keyless: run alone
            route = table.slot_route[slot_of(args[0], names)]
            if route is None:
                continue
            transport = route.primary
            if args[0] in READ_COMMANDS and route.readers is not None:
                if id(route) not in self._leases:
                    self._leases[id(route)] = _checkout(route.readers)
                lease = self._leases[id(route)]
                if lease is not None:
                    transport = table.transport(lease[1].endpoint.id)
            if transport is route.primary and route.primary_breaker.state != CLOSED:
                continue  # run alone: a primary with an open breaker fails fast
            self.batches.setdefault(transport.address, (transport, []))[1].append(index)

    def answered(
        self,
        address: str,
        indexes: Sequence[int],
        replies: Sequence[Any],
        failure: BaseException | None,
        readonly: Callable[[Any], bool],
        parse: Callable[[Any, Any, dict[str, Any]], Any],
    ) -> None:
        """One node's replies (error replies as exception objects) and its failure."""
        commands = self.commands
        if failure is not None:
            self._failed[address] = failure
            if not self._leased(address):
                self.table.node_failed(address, failure)  # a refused connect costs nothing
            self.table.stats.node_errors += 1
            # Unanswered commands are re-run alone if they never left or only read; a
            # write whose reply was lost is reported, never re-sent.
            sent = not never_sent(failure)
            for i in indexes[len(replies) :]:
                name = commands[i][0][0]
                if sent and not readonly(name):
                    self.table.stats.unknown_outcomes += 1
                    self.results[i] = _unknown(name, address, failure)
        for i, reply in zip(indexes, replies, strict=False):
            if isinstance(reply, _RETRY_ON_OWN):
                continue
            if isinstance(reply, NoScriptError):
                self.noscript.append((i, reply))  # the driver loads it, or keeps the error
            elif isinstance(reply, Exception):
                self.results[i] = reply
            else:
                name, options = commands[i][0][0], dict(commands[i][1])
                options.pop("NEVER_DECODE", None)
                self.results[i] = parse(name, reply, options)

    def not_loaded(self, index: int, error: NoScriptError) -> None:
        """The script of a NOSCRIPT answer is not registered here: the error stands."""
        self.results[index] = error

    def finish(self) -> None:
        """Give back the reader leases, counting each node's failure once."""
        for lease in self._leases.values():
            if lease is not None:
                router, member, trial = lease
                router.checkin(member, trial, self._failed.get(member.endpoint.id), None)

    def pending(self) -> list[int]:
        """The commands to run alone, in order (a later read sees an earlier write)."""
        return [i for i, result in enumerate(self.results) if result is PENDING]

    def _leased(self, address: str) -> bool:
        return any(lease and lease[1].endpoint.id == address for lease in self._leases.values())


def _unknown(name: Any, address: str, failure: BaseException) -> OutcomeUnknown:
    error = OutcomeUnknown(str(name), address, failure)
    error.__cause__ = failure
    return error


def _checkout(router: Router) -> _Lease | None:
    try:
        member, trial = router.checkout()
    except NoHealthyEndpoint:
        return None
    return router, member, trial
