"""core/v1 Events on the workloads slotpilot changes: what ``kubectl describe`` shows.

Scaled up/down (reason and numbers), scale blocked (the gate), migration
started/finished/failed, node down/recovered/replaced. Each Event names its object's
``uid`` (read when the Event is created): ``kubectl describe`` matches Events by uid and
hides those without one. A repeat of the same event (same object, reason and message)
patches ``count`` and ``lastTimestamp`` instead of creating another object, as kubelet's
recorder does; once the API server has let the Event expire (1 h after its last write by
default) the patch answers 404 and the repeat is created anew. Messages are cut to 1 KiB;
a failure to post is logged and never reaches the control loop. Only the leader posts:
the caller decides (see ``controller.runner``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from controller.platform.kubernetes.api import KubeApi, KubeApiError, NotFound

__all__ = ["MAX_MESSAGE_BYTES", "EventRecorder", "trim_message"]

log = logging.getLogger("slotpilot.kubernetes")

MAX_MESSAGE_BYTES = 1024
_API_VERSIONS = {"StatefulSet": "apps/v1", "Deployment": "apps/v1", "Pod": "v1"}


def trim_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary, marked with '…'."""
    data = message.encode()
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode(errors="ignore") + "…"


class EventRecorder:
    """Posts Events in one namespace, deduplicating repeats."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        component: str = "slotpilot",
        host: str = "",
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_remembered: int = 512,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.component = component
        self.host = host
        self._wall = wall
        self._max = max_remembered
        # (kind, name, reason, message) -> (event name, count)
        self._seen: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        self.failures = 0

    def record(
        self, kind: str, name: str, reason: str, message: str, warning: bool = False
    ) -> None:
        """Post (or count again) one Event about ``kind/name``. Never raises."""
        message = trim_message(message)
        key = (kind, name, reason, message)
        now = self._wall()
        try:
            seen = self._seen.get(key)
            if seen is not None:
                event_name, count = seen
                try:
                    self.api.call(
                        f"patch events {event_name}",
                        self.api.core.patch_namespaced_event,
                        event_name,
                        self.namespace,
                        {"count": count + 1, "lastTimestamp": now.isoformat()},
                    )
                except NotFound:  # expired (or deleted): the repeat is a new Event
                    del self._seen[key]
                else:
                    self._seen[key] = (event_name, count + 1)
                    return
            event_name = self._create(kind, name, reason, message, warning, now)
            if len(self._seen) >= self._max:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = (event_name, 1)
        except KubeApiError as exc:
            self.failures += 1
            log.warning("event %s %s/%s not posted: %s", reason, kind, name, exc)
        except Exception as exc:  # a malformed reply or a client bug: never the loop's end
            self.failures += 1
            log.warning("event %s %s/%s not posted: %r", reason, kind, name, exc)

    def _create(
        self, kind: str, name: str, reason: str, message: str, warning: bool, now: datetime
    ) -> str:
        event_name = f"{name}.{secrets.token_hex(8)}"
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=event_name, namespace=self.namespace),
            involved_object=client.V1ObjectReference(
                api_version=_API_VERSIONS.get(kind, "v1"),
                kind=kind,
                name=name,
                namespace=self.namespace,
                uid=self._uid(kind, name),
            ),
            reason=reason,
            message=message,
            type="Warning" if warning else "Normal",
            count=1,
            first_timestamp=now,
            last_timestamp=now,
            source=client.V1EventSource(component=self.component, host=self.host or None),
            reporting_component=self.component,
            reporting_instance=self.host or self.component,
        )
        self.api.call(
            f"create events {event_name}",
            self.api.core.create_namespaced_event,
            self.namespace,
            body,
        )
        return event_name

    def _uid(self, kind: str, name: str) -> str | None:
        """The object's uid (what ``kubectl describe`` matches Events by); None when it
        cannot be read (the Event is still posted: the log and ``kubectl get events``
        show it)."""
        read = {
            "StatefulSet": self.api.apps.read_namespaced_stateful_set,
            "Deployment": self.api.apps.read_namespaced_deployment,
        }.get(kind)
        if read is None:
            return None
        try:
            obj: Any = self.api.call(f"get {kind.lower()}s {name}", read, name, self.namespace)
        except KubeApiError as exc:
            log.warning("event about %s/%s without its uid: %s", kind, name, exc)
            return None
        return str(obj.metadata.uid) if obj.metadata is not None and obj.metadata.uid else None
