"""Real TLS upstream servers for integration tests (Python's ssl module, threads).

Protocol after the TLS handshake: the server greets with ``hello from NAME\\n``,
then reads one command line:
- ``ECHO``: echo everything until EOF, then close;
- ``SINK N``: read N bytes, answer with their SHA-256 hex and close;
- ``SOURCE N SEED``: send N pseudo-random bytes (see `pattern_chunks`), then close;
- ``DRIP N MS``: send N single bytes, one every MS milliseconds, then close.
With ``proxy_protocol=True`` it first reads a PROXY header and records it.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading

from tlsgate.proto.proxy_protocol import parse_proxy_header


def pattern_chunks(total: int, seed: int, chunk: int = 1 << 20):
    """Deterministic, incompressible-looking bytes without holding them all in memory."""
    block = hashlib.sha256(str(seed).encode()).digest() * (chunk // 32)
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        yield piece
        sent += len(piece)


class TlsUpstream:
    def __init__(
        self,
        name: str,
        cert_files,
        proxy_protocol: bool = False,
        host: str = "127.0.0.1",
        tls: bool = True,
        client_ca=None,
    ):
        """``tls=False``: the same protocol in plaintext (an upstream behind termination).
        ``client_ca``: require client certificates from this CA file."""
        self.name = name
        self.tls = tls
        self.proxy_protocol = proxy_protocol
        self.proxy_headers: list = []
        self.sni_seen: list[str | None] = []
        self.accepted = 0
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_files.cert, cert_files.key)
        self.context.sni_callback = self._record_sni
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}" if family == socket.AF_INET else f"[{host}]:{self.port}"
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _record_sni(self, ssl_sock, server_name, context):
        self.sni_seen.append(server_name)

    def close(self) -> None:
        self._closed = True
        stop_listening(self.sock)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(60)
            if self.proxy_protocol:
                self.proxy_headers.append(self._read_proxy_header(conn))
            tls = self.context.wrap_socket(conn, server_side=True) if self.tls else conn
            with tls:
                tls.sendall(f"hello from {self.name}\n".encode())
                line = _read_line(tls)
                cmd, *args = line.split()
                if cmd == "ECHO":
                    while data := tls.recv(65536):
                        tls.sendall(data)
                elif cmd == "SINK":
                    remaining, digest = int(args[0]), hashlib.sha256()
                    while remaining:
                        data = tls.recv(min(remaining, 1 << 20))
                        if not data:
                            break
                        digest.update(data)
                        remaining -= len(data)
                    tls.sendall(digest.hexdigest().encode() + b"\n")
                elif cmd == "DRIP":
                    for _ in range(int(args[0])):
                        threading.Event().wait(int(args[1]) / 1000)
                        tls.sendall(b".")
                elif cmd == "SOURCE":
                    for piece in pattern_chunks(int(args[0]), int(args[1])):
                        tls.sendall(piece)
                if self.tls:
                    try:
                        tls.unwrap()
                    except (OSError, ValueError):
                        pass  # the client may have closed without close_notify
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            conn.close()

    @staticmethod
    def _read_proxy_header(conn: socket.socket):
        buf = b""
        while True:
            # Peek so that the TLS bytes after the header stay in the socket for wrap_socket().
            peeked = conn.recv(4096, socket.MSG_PEEK)
            if not peeked:
                raise OSError("closed before PROXY header")
            header = parse_proxy_header(peeked)
            if header is not None:
                conn.recv(header.length)
                return header
            if len(peeked) == len(buf):
                threading.Event().wait(0.01)
            buf = peeked


def _read_line(tls) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = tls.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


class RawUpstream:
    """A plain TCP upstream: reads until EOF, answers ``got N bytes``, closes.

    Passthrough relays bytes it never reads, so after a real ClientHello any bytes
    will do; this lets a test watch TCP half-closes cross the gateway exactly.
    """

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.address = f"{host}:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                self.received.append(data)
                conn.sendall(f"got {len(data)} bytes".encode())

    def close(self) -> None:
        self._closed = True
        stop_listening(self.sock)


def stop_listening(sock: socket.socket) -> None:
    """Close a listener whose thread may be blocked in accept().

    close() alone does not wake that accept(): the socket would go on listening on its
    port, unseen, and take connections meant for a later test's upstream on the same
    port (it happened: a terminated connection waited for a greeting that the wrong
    upstream would never send). shutdown() wakes it and stops the listening.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def client_hello_bytes(server_name: str) -> bytes:
    """A real ClientHello from Python's ssl module, as a client would first send it."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
