"""The master's control socket: a non-blocking Unix socket server in the master's loop.

Owns the socket file and its security; hands every well-formed request to a
dispatch function (tlsgate/master/handlers.py) and offers the connection
object that handlers answer through. No threads: the listening socket and each
client are registered on the master's selector (tlsgate/master/arbiter.py).

Security, in layers:
- the socket's directory is created 0700 when it does not exist (a warning is
  logged if an existing one is open to others), and the socket itself is 0600;
- every accepted connection's peer credentials (``SO_PEERCRED``) are checked:
  only root and the gateway's own user may talk to it; anyone else gets one
  ``forbidden`` error frame and is disconnected, whatever the file modes are.

A request that is not valid JSON, is not an object, or lacks ``id``/``type``
gets an error response and the connection stays usable; a frame longer than
`MAX_REQUEST_SIZE` gets a ``too_large`` error and the connection is closed
(its stream cannot be trusted any more). Neither ever reaches the workers.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from tlsgate.control.protocol import (
    MAX_REQUEST_SIZE,
    FrameTooLarge,
    ProtocolError,
    RequestError,
    build_error,
    build_response,
    build_stream_item,
    encode_message,
    parse_request,
)
from tlsgate.master.channels import FramedStream, accept_ready

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")


class ControlSocketInUse(OSError):
    """Another process answers on the control socket path."""


class ControlConnection:
    """One client of the control socket."""

    def __init__(self, server: ControlServer, sock: socket.socket, pid: int, uid: int):
        self.server = server
        self.peer_pid = pid
        self.peer_uid = uid
        self.on_close: list[Callable[[], None]] = []
        """Cleanups for this client's state elsewhere (event subscriptions)."""
        self.stream = FramedStream(
            sock,
            server.selector,
            self._message,
            self._closed,
            max_input=MAX_REQUEST_SIZE,
            on_protocol_error=self._protocol_error,
        )

    @property
    def closed(self) -> bool:
        return self.stream.closed

    def respond(self, request_id: int | None, result) -> None:
        self.stream.send(build_response(request_id, result))

    def fail(
        self, request_id: int | None, code: str, message: str, problems: list[dict] | None = None
    ) -> None:
        self.stream.send(build_error(request_id, code, message, problems))

    def push(self, request_id: int, event: dict) -> None:
        self.stream.send(build_stream_item(request_id, event))

    def _message(self, stream: FramedStream, message: dict) -> None:
        request_id = message.get("id") if isinstance(message.get("id"), int) else None
        try:
            request_id, request_type, args = parse_request(message)
            self.server.dispatch(self, request_id, request_type, args)
        except RequestError as e:
            self.fail(request_id, e.code, e.message, e.problems)

    def _protocol_error(self, stream: FramedStream, error: ProtocolError) -> None:
        if not isinstance(error, FrameTooLarge):
            # A whole frame whose payload is not a JSON object: framing is intact, keep going.
            self.fail(None, "bad_request", f"malformed request: {error}")
            return
        self.fail(None, "too_large", f"{error}; closing the connection")
        stream.close_after_flush()

    def _closed(self, stream: FramedStream) -> None:
        self.server.clients.discard(self)
        for cleanup in self.on_close:
            cleanup()
        self.on_close.clear()


class ControlServer:
    def __init__(
        self,
        path: Path,
        selector: selectors.BaseSelector,
        dispatch: Callable[[ControlConnection, int, str, dict], None],
    ):
        self.path = path
        self.selector = selector
        self.dispatch = dispatch
        self.sock: socket.socket | None = None
        self.clients: set[ControlConnection] = set()
        self.allowed_uids = frozenset({0, os.geteuid()})
        self._inode: tuple[int, int] | None = None

    def open(self) -> None:
        """Create the socket file (0600 in a 0700 directory); `ControlSocketInUse` if a gateway answers there."""
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
        elif stat.S_IMODE(directory.stat().st_mode) & 0o077:
            log.warning(
                "the control socket's directory %s is open to other users (mode %o); "
                "peer credentials are still checked, but 0700 is recommended",
                directory,
                stat.S_IMODE(directory.stat().st_mode),
            )
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(64)
        sock.setblocking(False)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, self._accept)

    def _remove_stale(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOTSOCK, errno.ENOENT):
                raise
        else:
            raise ControlSocketInUse(errno.EADDRINUSE, f"another gateway answers on {self.path}")
        finally:
            probe.close()
        self.path.unlink(missing_ok=True)

    def fds(self) -> list[int]:
        fds = [c.stream.fileno() for c in self.clients if not c.closed]
        if self.sock is not None:
            fds.append(self.sock.fileno())
        return fds

    def close(self) -> None:
        for client in list(self.clients):
            client.stream.close()
        if self.sock is None:
            return
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        self.sock = None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass  # removed by someone else; nothing of ours to clean up

    def _accept(self, mask: int) -> None:
        assert self.sock is not None
        for sock in accept_ready(self.sock, "control socket"):
            pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if uid not in self.allowed_uids:
                log.warning(
                    "control socket: refused process %d of uid %d (only root and uid %d may connect)",
                    pid,
                    uid,
                    os.geteuid(),
                )
                _refuse(sock, uid)
                continue
            self.clients.add(ControlConnection(self, sock, pid, uid))


def _refuse(sock: socket.socket, uid: int) -> None:
    """One error frame, best effort and without blocking, then close."""
    frame = encode_message(
        build_error(None, "forbidden", f"uid {uid} may not use this control socket")
    )
    try:
        sock.setblocking(False)
        sock.send(frame)
    except OSError:
        pass  # the peer is gone or its buffer is full; the close says the rest
    sock.close()
