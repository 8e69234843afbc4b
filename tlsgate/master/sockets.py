"""Binding the listening sockets, once, in the master.

Workers inherit these sockets through fork and share their accept queue. The
master keeps them open across reloads so that no connection attempt ever finds
the port closed; a reload only binds addresses that are new.
"""

from __future__ import annotations

import socket

from tlsgate.config.model import HostPort

BACKLOG = 4096


class BindError(Exception):
    def __init__(self, address: HostPort, error: OSError):
        super().__init__(f"cannot listen on {address}: {error.strerror or error}")
        self.address = address


def create_listener(address: HostPort) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]:8443" and "0.0.0.0:8443" are configured separately, as in the example.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Linux copies TCP_NODELAY to every socket accept() returns: set once here, the
        # workers spare a setsockopt() per connection (relayed handshake flights and
        # small records must not wait for Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((address.host, address.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise BindError(address, e) from e
    sock.set_inheritable(True)
    return sock


def create_listeners(
    addresses: tuple[HostPort, ...], existing: dict[HostPort, socket.socket] | None = None
) -> dict[HostPort, socket.socket]:
    """Listeners for `addresses`, reusing `existing` ones; on error, closes what it opened."""
    existing = existing or {}
    result: dict[HostPort, socket.socket] = {}
    opened: list[socket.socket] = []
    try:
        for address in addresses:
            if address in existing:
                result[address] = existing[address]
            else:
                sock = create_listener(address)
                opened.append(sock)
                result[address] = sock
    except BindError:
        for sock in opened:
            sock.close()
        raise
    return result
