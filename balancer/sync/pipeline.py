"""ClusterPipeline: buffer commands, send them grouped per node, one round trip each.

Commands are sent to the primary serving their slot; read-only commands go to one
reader per shard chosen as ``read_from`` says. A command answered with a
redirection (MOVED/ASK), TRYAGAIN/CLUSTERDOWN, or whose node failed, is re-run on its
own through :meth:`ClusterClient.execute_command`, which handles all of those; so a
pipeline survives a live migration, but it is not atomic (nor is it across nodes).
When a node's connection fails after the batch was sent, the replies that arrived are
kept; unanswered reads are re-run, unanswered writes become
:class:`~balancer.core.errors.OutcomeUnknown` in their place (raised by ``execute()`` unless
``raise_on_error=False``): they may have been applied, so they are never sent twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import redis
from redis.commands.core import DataAccessCommands, ScriptCommands
from redis.exceptions import (
    RedisClusterException,
)
from redis.utils import safe_str, truncate_text

from balancer.core.batch import BatchPlan
from balancer.core.errors import OutcomeUnknown

if TYPE_CHECKING:
    from balancer.sync.port import SyncClientPort

__all__ = ["ClusterPipeline", "annotate"]


class ClusterPipeline(DataAccessCommands, ScriptCommands):
    """Returned by :meth:`ClusterClient.pipeline`; use as a context manager or call
    :meth:`execute`."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; unused here
    _is_async_client: Literal[False] = False  # selects redis-py's sync return types

    def __init__(self, client: SyncClientPort) -> None:
        self._client = client
        self._commands: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __enter__(self) -> ClusterPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def __len__(self) -> int:
        return len(self._commands)

    def __bool__(self) -> bool:
        return True  # as redis-py's: an empty pipeline is still a pipeline

    def reset(self) -> None:
        self._commands = []

    def load_scripts(self) -> None:
        """Load the registered scripts that queued ``EVALSHA`` calls name, on every
        primary (``execute()`` also loads one that a node reports missing)."""
        seen: set[Any] = set()
        for args, _ in self._commands:
            if len(args) > 1 and args[1] not in seen and self._client._load_script(args):
                seen.add(args[1])

    def discard(self) -> None:
        """Forget the queued commands (RedisCluster allows this in transactions only)."""
        self.reset()

    def multi(self) -> None:
        raise RedisClusterException(
            "method multi() is not supported outside of transactional context"
        )

    def watch(self, *names: Any) -> None:
        raise RedisClusterException(
            "method watch() is not supported outside of transactional context"
        )

    def unwatch(self, *names: Any) -> None:
        raise RedisClusterException(
            "method unwatch() is not supported outside of transactional context"
        )

    def execute_command(self, *args: Any, **options: Any) -> ClusterPipeline:
        self._commands.append((args, options))
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every buffered command; results in order. With ``raise_on_error`` the
        first error reply is raised after all commands ran; otherwise errors are
        returned in place."""
        commands, self._commands = self._commands, []
        client = self._client
        keys = [
            options.pop("keys", None) or client._locator.keys(args) for args, options in commands
        ]
        plan = BatchPlan(client._table, commands, keys, client._slot_of)
        for address, (transport, indexes) in plan.batches.items():
            replies, failure = transport.execute_partial([commands[i][0] for i in indexes])
            plan.answered(
                address, indexes, replies, failure, client._locator.readonly, client._parse
            )
        for i, error in plan.noscript:
            if not client._load_script(commands[i][0]):
                plan.not_loaded(i, error)  # else: it did not run; loaded now, re-run below
        plan.finish()
        results: list[Any] = plan.results
        for i in plan.pending():
            args, options = commands[i]
            try:
                results[i] = client.execute_command(*args, **options)
            except (redis.ResponseError, OutcomeUnknown) as exc:
                results[i] = exc
        if raise_on_error:
            for i, result in enumerate(results):
                if isinstance(result, Exception):
                    annotate(result, i + 1, commands[i][0])
                    raise result
        return results


def annotate(exception: BaseException, number: int, command: Any) -> None:
    """redis-py's prefix on an error raised from a pipeline: which command failed."""
    text = " ".join(map(safe_str, command))
    first = exception.args[0] if exception.args else ""
    message = f"Command # {number} ({truncate_text(text)}) of pipeline caused error: {first}"
    exception.args = (message, *exception.args[1:])
