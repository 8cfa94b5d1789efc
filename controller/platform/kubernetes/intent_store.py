"""The intent record on Kubernetes: an annotation on the shard StatefulSet.

The same JSON as the local platform's state file (:class:`controller.intent.IntentRecord`),
written before acting and cleared after, so a restarted or newly elected controller in
another pod resumes the change instead of guessing. It lives on the workload it is about:
deleting the StatefulSet deletes the record with it.

A write is a compare-and-set on the annotation: it is sent with the ``resourceVersion``
of a read that still shows the annotation this controller last loaded. When the
annotation changed meanwhile (another controller wrote it) :class:`IntentConflict` is
raised and nothing is written; a 409 caused by anything else on the object (status
updates) is retried on a fresh read.
"""

from __future__ import annotations

from typing import Any

from controller.intent import IntentConflict, IntentError, IntentRecord
from controller.platform.kubernetes.api import Conflict, KubeApi, KubeApiError

__all__ = ["INTENT_ANNOTATION", "IntentAnnotation"]

INTENT_ANNOTATION = "slotpilot.io/intent"
_UNREAD = object()  # no load() yet: the first save takes the record as it finds it
_WRITE_ATTEMPTS = 5


class IntentAnnotation:
    """``load()`` / ``save(record)`` like :class:`controller.intent.IntentFile`."""

    def __init__(self, api: KubeApi, namespace: str, statefulset: str) -> None:
        self.api = api
        self.namespace = namespace
        self.statefulset = statefulset
        self._seen: object = _UNREAD  # the annotation text of the last load or save

    def _read(self) -> tuple[str | None, str | None]:
        """(annotation text, resourceVersion) of the StatefulSet now."""
        try:
            sts: Any = self.api.call(
                f"get statefulsets {self.statefulset}",
                self.api.apps.read_namespaced_stateful_set,
                self.statefulset,
                self.namespace,
            )
        except KubeApiError as exc:
            raise IntentError(f"statefulset {self.statefulset}: {exc}") from None
        meta = sts.metadata
        annotations = (meta.annotations or {}) if meta else {}
        return annotations.get(INTENT_ANNOTATION), meta.resource_version if meta else None

    def load(self) -> IntentRecord:
        text, _ = self._read()
        self._seen = text
        if not text:
            return IntentRecord()
        try:
            return IntentRecord.from_json(text)
        except IntentError as exc:
            raise IntentError(
                f"statefulset {self.statefulset} annotation {INTENT_ANNOTATION}: {exc}"
            ) from None

    def save(self, record: IntentRecord) -> None:
        """Write the record if the annotation is still the one last loaded (raises
        :class:`IntentConflict` if another controller wrote it, a PlatformError when the
        API refuses)."""
        text = record.to_json()
        for _ in range(_WRITE_ATTEMPTS):
            current, version = self._read()
            if self._seen is not _UNREAD and current != self._seen:
                raise IntentConflict(
                    f"statefulset {self.statefulset} annotation {INTENT_ANNOTATION} was "
                    "changed by another controller since it was read"
                )
            try:
                self.api.call(
                    f"patch statefulsets {self.statefulset}",
                    self.api.apps.patch_namespaced_stateful_set,
                    self.statefulset,
                    self.namespace,
                    {"metadata": {"annotations": {INTENT_ANNOTATION: text},
                                  "resourceVersion": version}},
                )  # fmt: skip
            except Conflict:
                continue  # the object changed (status, labels): check the annotation again
            self._seen = text
            return
        raise IntentConflict(
            f"statefulset {self.statefulset}: {_WRITE_ATTEMPTS} writes of the intent record "
            "in a row met a newer version of the object"
        )
