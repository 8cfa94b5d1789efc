"""Endpoint: an address the SDK can route to, with a relative weight."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Endpoint", "parse_address"]


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and check both parts."""
    if not isinstance(address, str) or not address:
        raise ValueError(
            f"endpoint address must be a non-empty 'host:port' string, got {address!r}"
        )
    if address.startswith("["):
        host, sep, port_text = address[1:].partition("]:")
    else:
        host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"endpoint address {address!r} is not 'host:port'")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"endpoint address {address!r}: port {port} is out of range 1-65535")
    return host, port


@dataclass(frozen=True)
class Endpoint:
    """A routable node. ``id`` defaults to the address; state survives updates per id."""

    address: str
    weight: float = 1.0
    id: str = ""
    host: str = field(init=False, repr=False, compare=False)
    port: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host, port = parse_address(self.address)
        if not isinstance(self.weight, int | float) or not self.weight > 0:
            raise ValueError(f"endpoint {self.address}: weight must be > 0, got {self.weight!r}")
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        if not self.id:
            object.__setattr__(self, "id", self.address)
