"""How `slotpilot run` finds the API server: in a pod, the service account (the token,
the cluster CA and ``KUBERNETES_SERVICE_HOST``/``PORT``); outside, a kubeconfig
(``kubernetes.kubeconfig``, else ``KUBECONFIG``: the `run` processes of the end-to-end
tests find the emulator that way). No request is made: these check the client's
configuration, which the other tests then use over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.config import incluster_config

from controller.platform.kubernetes.api import KubeApiError, load_api_client
from tests.k8s.emulator import KubeAPI


@pytest.fixture(autouse=True)
def _default_configuration() -> Iterator[None]:
    """Loading a config sets the client's process-wide default: put it back."""
    saved = client.Configuration.get_default_copy()
    yield
    client.Configuration.set_default(saved)


def test_in_a_pod_the_service_account_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token-123")
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))  # never read in a pod
    api_client = load_api_client()
    try:
        configuration = api_client.configuration
        assert configuration.host == "https://10.96.0.1:443"
        assert configuration.ssl_ca_cert == str(ca)
        assert configuration.api_key["BearerToken"].endswith("sa-token-123")
    finally:
        api_client.close()


def test_outside_a_pod_the_kubeconfig_is_used(
    k8s_api: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = k8s_api.write_kubeconfig(tmp_path / "kubeconfig")
    api_client = load_api_client(str(kubeconfig))  # `run` passes kubernetes.kubeconfig
    try:
        assert api_client.configuration.host == k8s_api.url
    finally:
        api_client.close()
    with pytest.raises(KubeApiError, match="no Kubernetes configuration"):
        load_api_client(str(tmp_path / "missing"))
