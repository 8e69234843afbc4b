"""Dialling upstreams: a small dialer interface between routing and sockets.

The connection handler asks a `Dialer` for a connected socket and does not care
what is behind it. Today the only kind is `TcpDialer` (``host:port``); agent
tunnels (a later feature) will add a dialer that opens a stream over a tunnel
session held by one worker, without the handler or the route table changing.
"""

from __future__ import annotations

import _socket
import errno
import socket as stdlib_socket
from typing import Protocol

import gevent
from gevent import socket

from tlsgate.config.model import HostPort

_RESET_AFTER_ACCEPT = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})


class DialError(Exception):
    """Connecting to an upstream failed. ``reason`` is a close-reason name."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Dialer(Protocol):
    label: str
    """What the events show as ``object.upstream.addr``."""

    def dial(self, timeout: float) -> socket.socket:
        """A connected, cooperative socket, or `DialError`."""


class TcpDialer:
    __slots__ = ("address", "label", "_family", "_sockaddr")

    def __init__(self, address: HostPort):
        self.address = address
        self.label = str(address)
        self._family, self._sockaddr = _resolve_literal(address)

    def dial(self, timeout: float) -> socket.socket:
        family, sockaddr = self._family, self._sockaddr
        if family is None:
            # A host name: resolve per dial (cooperatively) so DNS changes are followed.
            try:
                infos = socket.getaddrinfo(
                    self.address.host, self.address.port, 0, stdlib_socket.SOCK_STREAM
                )
            except OSError as e:
                raise DialError("upstream_connect_failed", f"resolve {self.label}: {e}") from e
            family, _, _, _, sockaddr = infos[0]
        try:
            sock = socket.socket(family, stdlib_socket.SOCK_STREAM)
        except OSError as e:
            raise _no_socket(self.label, e) from e
        try:
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
            with gevent.Timeout(timeout, False):
                err = sock.connect_ex(sockaddr)
                if err in (0, errno.EISCONN):
                    return sock
                if err in _RESET_AFTER_ACCEPT:
                    # The handshake completed (a refused SYN is ECONNREFUSED) and the upstream
                    # reset before we looked: reading SO_ERROR cleared the error, so the socket
                    # would now look like a clean EOF. Report what happened instead.
                    raise DialError(
                        "upstream_reset", f"connect {self.label}: {errno.errorcode[err]}"
                    )
                raise DialError(
                    "upstream_connect_failed",
                    f"connect {self.label}: {errno.errorcode.get(err, err)}",
                )
            raise DialError("upstream_connect_timeout", f"connect {self.label}: timed out")
        except BaseException:
            sock.close()
            raise

    # -- for the callback-driven fast path (tlsgate/worker/fastpath.py) -------------------

    @property
    def connects_without_greenlet(self) -> bool:
        """Whether `start_connect` can be used: the address is a literal (no DNS to wait for)."""
        return self._family is not None

    def start_connect(self) -> _socket.socket:
        """A non-blocking plain socket whose connect() has been started.

        The caller may send at once (a send that says EAGAIN means still connecting; any
        other errno goes through `connect_error`), or wait for it to become writable (or
        for its own timeout) and call `finish_connect`. A plain ``_socket.socket``, not a
        gevent one: the fast path drives it with event-loop watchers of its own.
        """
        # Non-blocking from birth: no ioctl() to make it so.
        try:
            sock = _socket.socket(self._family, _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK)
        except OSError as e:
            raise _no_socket(self.label, e) from e
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            err = sock.connect_ex(self._sockaddr)
            if err not in (0, errno.EINPROGRESS, errno.EISCONN):
                raise _connect_error(self.label, err)
        except BaseException:
            sock.close()
            raise
        return sock

    def finish_connect(self, sock: _socket.socket) -> None:
        """Raise `DialError` if the connect `start_connect` began has failed."""
        err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err not in (0, errno.EISCONN):
            raise self.connect_error(err)

    def connect_error(self, err: int) -> DialError:
        """What a failed connect's errno (from SO_ERROR, or from the first send) means."""
        return _connect_error(self.label, err)

    def timeout_error(self) -> DialError:
        return DialError("upstream_connect_timeout", f"connect {self.label}: timed out")


def _no_socket(label: str, e: OSError) -> DialError:
    """The worker could not even make a socket (out of descriptors or buffers): this
    connection fails like a refused connect, and the worker goes on."""
    return DialError("upstream_connect_failed", f"connect {label}: socket: {e.strerror or e}")


def _connect_error(label: str, err: int) -> DialError:
    if err in _RESET_AFTER_ACCEPT:
        # The handshake completed (a refused SYN is ECONNREFUSED) and the upstream reset
        # before we looked: reading SO_ERROR cleared the error, so the socket would now
        # look like a clean EOF. Report what happened instead.
        return DialError("upstream_reset", f"connect {label}: {errno.errorcode[err]}")
    return DialError("upstream_connect_failed", f"connect {label}: {errno.errorcode.get(err, err)}")


def _resolve_literal(address: HostPort):
    for family in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
        try:
            stdlib_socket.inet_pton(family, address.host)
        except OSError:
            continue
        if family == stdlib_socket.AF_INET6:
            return family, (address.host, address.port, 0, 0)
        return family, (address.host, address.port)
    return None, None
