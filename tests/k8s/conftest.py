"""Fixtures: ``k8s_api`` (the Kubernetes API emulator over HTTP) and ``kubelet``.

``k8s_api`` is a running :class:`tests.k8s.emulator.KubeAPI`: ``.url``, ``.client()`` (an
official ``kubernetes.client.ApiClient`` for it), fault injection (``fail_next``,
``hang_next``, ``go_offline``/``go_online``), the request log (``requests()``) and a side
door to the store (``create``/``get``/``list``/``patch``/``delete``). ``kubelet`` is a
started :class:`tests.k8s.kubelet.Kubelet` on that API; ``make_kubelet`` builds one with
other settings (a worker command, server args). Everything is stopped at teardown, and a
kubelet that raised while the test ran fails it (its loop keeps going, so nothing else would).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.localcluster import available_servers
from tests.k8s.emulator import KubeAPI
from tests.k8s.kubelet import Kubelet

__all__ = ["k8s_api", "kubelet", "make_kubelet"]


@pytest.fixture
def k8s_api() -> Iterator[KubeAPI]:
    """A fresh emulated Kubernetes API on 127.0.0.1 (its own thread and event loop)."""
    api = KubeAPI().start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def make_kubelet(k8s_api: KubeAPI, tmp_path: Path) -> Iterator[Callable[..., Kubelet]]:
    """Factory for kubelets on ``k8s_api``; each one started is stopped (and its processes)."""
    started: list[Kubelet] = []

    def factory(**settings: Any) -> Kubelet:
        if "binary" not in settings and not available_servers():
            pytest.skip("no valkey-server or redis-server binary on this machine")
        workdir = tmp_path / f"kubelet{len(started)}"
        kubelet = Kubelet(k8s_api, workdir, **settings)
        started.append(kubelet)
        return kubelet.start()

    yield factory
    for kubelet in started:
        kubelet.stop()
    errors = [repr(error) for kubelet in started for error in kubelet.errors]
    assert not errors, f"the kubelet failed while the test ran: {errors}"


@pytest.fixture
def kubelet(make_kubelet: Callable[..., Kubelet]) -> Kubelet:
    """A kubelet with default settings (servers from the project's binary finder)."""
    return make_kubelet()
