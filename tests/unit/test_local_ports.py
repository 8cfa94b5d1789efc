"""The local platform's port ranges, socket-free: ``SLOTPILOT_LOCAL_PORTS`` parsing and the
error when nothing is left above a cluster's highest port."""

from __future__ import annotations

import pytest

from controller.errors import BadInput
from controller.platform.local_nodes import (
    DEFAULT_LOCAL_PORTS,
    LOCAL_PORTS_ENV,
    ClusterStartError,
    free_port,
    local_port_range,
)


@pytest.mark.parametrize("environ", [{}, {LOCAL_PORTS_ENV: ""}, {LOCAL_PORTS_ENV: "  "}])
def test_unset_or_empty_keeps_the_default_range(environ: dict[str, str]) -> None:
    assert local_port_range(environ) == DEFAULT_LOCAL_PORTS == (20000, 25999)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("21000-21999", (21000, 21999)),
        (" 21000 - 21999 ", (21000, 21999)),
        ("1024-1024", (1024, 1024)),  # one port
        ("20000-29999", (20000, 29999)),  # 10000 ports: no client port is another's bus
        ("45536-55535", (45536, 55535)),  # the top: bus ports end at 65535
    ],
)
def test_a_valid_range_is_read(value: str, expected: tuple[int, int]) -> None:
    assert local_port_range({LOCAL_PORTS_ENV: value}) == expected


@pytest.mark.parametrize(
    "value", ["abc", "21000", "21000-", "-21999", "21000:21999", "2e4-3e4", "-1-100", "1-2-3"]
)
def test_a_malformed_range_names_the_variable(value: str) -> None:
    with pytest.raises(BadInput, match="expected LOW-HIGH") as caught:
        local_port_range({LOCAL_PORTS_ENV: value})
    assert caught.value.field == LOCAL_PORTS_ENV
    assert str(caught.value).startswith(f"{LOCAL_PORTS_ENV}: ") and repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("80-1000", "1024 <= LOW"),  # privileged ports
        ("22000-21000", "LOW <= HIGH"),
        ("50000-55536", "HIGH <= 55535"),  # its bus port would pass 65535
        ("60000-61000", "HIGH <= 55535"),
        ("20000-30000", "spans more than 10000"),  # 30000 is 20000's bus port
    ],
)
def test_an_out_of_range_value_says_what_is_allowed(value: str, why: str) -> None:
    with pytest.raises(BadInput, match=why) as caught:
        local_port_range({LOCAL_PORTS_ENV: value})
    assert caught.value.field == LOCAL_PORTS_ENV and BadInput.code == 2


def test_free_port_reads_the_variable_before_touching_a_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LOCAL_PORTS_ENV, "lots")
    with pytest.raises(BadInput, match=LOCAL_PORTS_ENV):
        free_port()


def test_nothing_above_the_last_usable_port_is_a_clear_error() -> None:
    with pytest.raises(ClusterStartError) as caught:
        free_port(above=55535)  # every higher port's bus port would pass 65535
    assert str(caught.value).startswith("no port above 55535 on 127.0.0.1: ")
    assert "highest a node can use is 55535" in str(caught.value)
    assert "+10000 must stay <= 65535" in str(caught.value)
    with pytest.raises(ClusterStartError, match="highest a node can use is 65535"):
        free_port(cluster_bus=False, above=65535)
