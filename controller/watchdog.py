"""Liveness that can fail: is the reconcile loop still making progress?

The lease threads renew on their own schedule, so a reconcile wedged in a call that never
returns would keep both leases (the Kubernetes Lease and the cluster's own) forever while
``/healthz`` said ok: nobody acts, and nobody may take over. A running cycle reports
progress (its start, a reshard step or batch, a check between batches, its end); when
none came for ``stall_cycles`` intervals the process says so on ``/healthz`` (the kubelet restarts
it) and hands leadership back so another replica acts meanwhile. A reshard may sit in
one step for long without a word (new pods becoming Ready, the cluster converging): while
one runs, :data:`RESHARD_STEP_SECONDS` (or the node source's longer ready timeout) is
allowed on top.
"""

from __future__ import annotations

__all__ = ["RESHARD_STEP_SECONDS", "stall_limit", "stalled"]

RESHARD_STEP_SECONDS = 600.0  # the node sources' default wait for new pods Ready


def stall_limit(interval: float, cycles: int, reshard_wait: float = 0.0) -> float:
    """Seconds without progress that mean stalled: ``cycles`` intervals, plus the longest
    single wait of a running reshard (``reshard_wait``, 0 when none runs)."""
    return interval * cycles + reshard_wait


def stalled(last_progress: float, now: float, limit: float) -> str | None:
    """Why the loop counts as stalled at monotonic ``now``, or None while it is alive."""
    quiet = now - last_progress
    if quiet <= limit:
        return None
    return f"no reconcile progress for {quiet:.0f}s (limit {limit:.0f}s): the loop is stuck"
