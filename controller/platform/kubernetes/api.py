"""The one door to the Kubernetes API: client construction, error mapping, retries.

Every call goes through :meth:`KubeApi.call`: 429, 5xx, timeouts and connection errors
are retried a bounded number of times with jittered exponential backoff (a 429's
``Retry-After`` is waited out, up to a cap), behind a circuit breaker (pybreaker) so an
API server that is down costs one fast failure per call instead of a pile of timeouts.
A 429 is the server answering "not so fast", not an outage: it never trips the breaker.
409 is returned to the caller, who re-reads and decides again; 403 becomes a message
that names the RBAC rule that is missing and the file that grants it. A call may carry
a time ``budget`` (the leader's renew deadline): no attempt or wait runs past it. Anything
that still fails is a :class:`~controller.platform.PlatformError`: the controller holds
(never scales down) and says why.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pybreaker
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from controller.platform.base import PlatformError
from controller.platform.kubernetes_rbac import call_rule, missing_rule_message

__all__ = ["Conflict", "KubeApi", "KubeApiError", "NotFound", "load_api_client"]

log = logging.getLogger("slotpilot.kubernetes")
T = TypeVar("T")

_RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})
_OUTAGE_STATUS = _RETRIED_STATUS - {429}  # what the breaker counts


class KubeApiError(PlatformError):
    """A Kubernetes API call failed for good; ``status`` is the HTTP status (0: no
    answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Conflict(KubeApiError):
    """409: the object changed since it was read (or already exists). Re-read."""


class NotFound(KubeApiError):
    """404: the object does not exist."""


def load_api_client(kubeconfig: str | None = None, host: str | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod, else a kubeconfig (``KUBECONFIG`` or
    ``~/.kube/config``); ``host`` points at an API server directly (tests, proxies)."""
    if host is not None:
        configuration = client.Configuration()
        configuration.host = host
        return client.ApiClient(configuration)
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise KubeApiError(f"no Kubernetes configuration: {exc}") from exc
    return client.ApiClient()


class KubeApi:
    """Typed API groups plus :meth:`call`, the retrying, breaker-guarded invoker."""

    def __init__(
        self,
        api_client: client.ApiClient,
        attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 2.0,
        request_timeout: float = 10.0,
        breaker: pybreaker.CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry_after_cap: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.request_timeout = request_timeout
        # answers such as 404 or 409 are not outages: the breaker does not count them
        self.breaker = breaker or pybreaker.CircuitBreaker(fail_max=5, reset_timeout=15)
        if _answered not in self.breaker.excluded_exceptions:
            self.breaker.add_excluded_exception(_answered)  # type: ignore[type-var,arg-type]
        self._sleep = sleep
        self._clock = clock
        self.retry_after_cap = retry_after_cap
        self.reachable = True  # the last call reached the API server

    def call(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        budget: float | None = None,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)`` with retries; ``what`` names the call in errors, e.g.
        ``"patch statefulsets/scale redis"``. Every attempt goes through the breaker, so
        an open circuit lets one trial call through once its reset timeout has passed.
        ``budget``: seconds the whole call may take, waits and retries included."""
        deadline = None if budget is None else self._clock() + budget
        timeout = kwargs.pop("_request_timeout", self.request_timeout)
        for attempt in range(1, self.attempts + 1):
            left = None if deadline is None else deadline - self._clock()
            if left is not None and left <= 0:
                raise KubeApiError(f"{what}: no answer within its {budget:.1f}s budget")
            kwargs["_request_timeout"] = timeout if left is None else min(timeout, left)
            try:
                result = self.breaker.call(fn, *args, **kwargs)
            except pybreaker.CircuitBreakerError as exc:
                self.reachable = False
                raise KubeApiError(f"{what}: Kubernetes API unavailable (circuit open)") from exc
            except ApiException as exc:
                status = int(exc.status or 0)
                if status not in _RETRIED_STATUS:
                    self.reachable = True  # it answered: a client-side problem, not an outage
                    raise _classify(what, exc, fn, args) from exc
                if status == 429:
                    self.reachable = True  # answered: busy, not away
                wait = max(self._backoff(attempt), self._retry_after(exc))
                if attempt < self.attempts and self._may_wait(wait, deadline):
                    self._sleep(wait)
                    continue
                raise KubeApiError(f"{what}: HTTP {status} {exc.reason}", status) from exc
            except Exception as exc:  # urllib3 timeouts, refused connections, DNS
                self.reachable = False
                wait = self._backoff(attempt)
                if attempt < self.attempts and self._may_wait(wait, deadline):
                    self._sleep(wait)
                    continue
                raise KubeApiError(f"{what}: Kubernetes API unreachable: {exc}") from exc
            self.reachable = True
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _may_wait(self, seconds: float, deadline: float | None) -> bool:
        return deadline is None or self._clock() + seconds < deadline

    def _retry_after(self, exc: ApiException) -> float:
        """The answer's ``Retry-After`` in seconds (0 when absent or an HTTP date), capped."""
        headers = exc.headers or {}
        try:
            seconds = float(headers.get("Retry-After") or 0)
        except (TypeError, ValueError):
            return 0.0
        return min(max(seconds, 0.0), self.retry_after_cap)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.random() * ceiling / 2


def _answered(exc: BaseException) -> bool:
    """An API answer that is not an outage (404, 409, 403, 422, 429 …): not a breaker
    failure."""
    return isinstance(exc, ApiException) and int(exc.status or 0) not in _OUTAGE_STATUS


def _classify(
    what: str, exc: ApiException, fn: Callable[..., Any], args: tuple[Any, ...]
) -> KubeApiError:
    status = int(exc.status or 0)
    if status == 409:
        return Conflict(f"{what}: conflict (changed meanwhile)", status)
    if status == 404:
        return NotFound(f"{what}: not found", status)
    if status == 403:
        strings = [a for a in args if isinstance(a, str)]
        call = call_rule(getattr(fn, "__name__", ""), strings)
        if call is None:
            return KubeApiError(f"{what}: forbidden (RBAC)", status)
        named = call[2] in ("get", "patch", "update", "delete") and strings
        return KubeApiError(
            f"{what}: {missing_rule_message(*call, strings[0] if named else '')}", status
        )
    return KubeApiError(f"{what}: HTTP {status} {exc.reason}", status)
