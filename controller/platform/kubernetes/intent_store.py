"""The intent record on Kubernetes: an annotation on the shard StatefulSet.

The same JSON as the local platform's state file (:class:`controller.intent.IntentRecord`),
written before acting and cleared after, so a restarted or newly elected controller in
another pod resumes the change instead of guessing. It lives on the workload it is about:
deleting the StatefulSet deletes the record with it.
"""

from __future__ import annotations

from typing import Any

from controller.intent import IntentError, IntentRecord
from controller.platform.kubernetes.api import KubeApi, KubeApiError

__all__ = ["INTENT_ANNOTATION", "IntentAnnotation"]

INTENT_ANNOTATION = "slotpilot.io/intent"


class IntentAnnotation:
    """``load()`` / ``save(record)`` like :class:`controller.intent.IntentFile`."""

    def __init__(self, api: KubeApi, namespace: str, statefulset: str) -> None:
        self.api = api
        self.namespace = namespace
        self.statefulset = statefulset

    def load(self) -> IntentRecord:
        try:
            sts: Any = self.api.call(
                f"get statefulsets {self.statefulset}",
                self.api.apps.read_namespaced_stateful_set,
                self.statefulset,
                self.namespace,
            )
        except KubeApiError as exc:
            raise IntentError(f"statefulset {self.statefulset}: {exc}") from None
        annotations = (sts.metadata.annotations or {}) if sts.metadata else {}
        text = annotations.get(INTENT_ANNOTATION)
        if not text:
            return IntentRecord()
        try:
            return IntentRecord.from_json(text)
        except IntentError as exc:
            raise IntentError(
                f"statefulset {self.statefulset} annotation {INTENT_ANNOTATION}: {exc}"
            ) from None

    def save(self, record: IntentRecord) -> None:
        """Merge-patch the annotation (raises a PlatformError when the API refuses)."""
        self.api.call(
            f"patch statefulsets {self.statefulset}",
            self.api.apps.patch_namespaced_stateful_set,
            self.statefulset,
            self.namespace,
            {"metadata": {"annotations": {INTENT_ANNOTATION: record.to_json()}}},
        )
