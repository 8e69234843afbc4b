"""Pieces every relay direction shares: the close signal, the idle bookkeeping of a leg,
error-to-reason mapping and half-close.

Used by tlsgate/worker/relay.py (the relay itself), tlsgate/worker/fdpump.py (the
plain-socket direction) and tlsgate/worker/tlspump.py (a direction with a TLS side);
kept apart so none imports another's internals.
"""

from __future__ import annotations

import errno
import logging
import socket as stdlib_socket

from tlsgate.events import ConnectionRecord

log = logging.getLogger("tlsgate.worker.relay")

_RESET_ERRNOS = frozenset(
    {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EBADF}
)


class RelayClosed(Exception):
    """Raised inside a pump greenlet to end the relay; carries the close reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Leg:
    """One direction's source: when it last delivered bytes and whether it ended.

    The relay's directions (`FdDirection`, `StreamDirection`) are their own legs: one
    object per direction, read by the idle sweeper through `Relay.both_idle`."""

    __slots__ = ("last_activity", "idle_timeout", "ended")

    def __init__(self, idle_timeout: float, now: float):
        self.last_activity = now
        self.idle_timeout = idle_timeout
        self.ended = False

    def idle(self, now: float) -> bool:
        return self.ended or now - self.last_activity >= self.idle_timeout


def closed_by(e: OSError, side: str, record: ConnectionRecord) -> RelayClosed:
    """The close reason for an error on ``side``; errors other than a reset are logged."""
    # ConnectionError covers TLS stream errors (bad record MAC, alerts after the handshake).
    if not (isinstance(e, ConnectionError) or e.errno in _RESET_ERRNOS):
        log.warning("connection %s: %s error: %s; closing", record.conn_id, side, e)
    return RelayClosed(f"{side}_reset")


def shutdown_write(sock) -> None:
    try:
        sock.shutdown(stdlib_socket.SHUT_WR)
    except OSError as e:
        # The peer may already be gone; the other direction will notice and report it.
        if e.errno not in (errno.ENOTCONN, errno.EBADF):
            raise
