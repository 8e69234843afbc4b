#!/usr/bin/env python3
"""Capture real ClientHellos from Python's ssl module and `openssl s_client` into tests/data/clienthello/.

Runs a loopback TCP server that records every byte a client sends until the
client goes quiet (it has sent its ClientHello and now waits for a ServerHello
that never comes), then closes the connection. Each capture is written as
``<name>.hex``: ``#`` comment lines naming the client, its version and options,
then the bytes in hex, 32 per line. The recording does not use tlsgate's parser,
so a parser bug cannot shape the fixtures.

Usage: python scripts/capture_clienthello.py [--out DIR] [--only NAME ...]

The tests read these files (tests/unit/test_clienthello.py, test_ja4.py); run
the script again only to add or refresh captures, then review the diff.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "clienthello"
QUIET_SECONDS = 1.0
"""A client that has sent its hello waits for the server; this much silence ends a capture."""

# Twelve long ALPN names push a hello past 1500 bytes, the size of one Ethernet
# frame, like the post-quantum hellos (X25519MLKEM768) that OpenSSL 3.0 cannot send.
LONG_ALPN = [f"tlsgate-test-protocol-{i:02d}-" + "x" * 100 for i in range(12)]


def record_first_bytes(server: socket.socket, result: dict[str, bytes]) -> None:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(QUIET_SECONDS)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    result["data"] = b"".join(chunks)


def capture(drive: Callable[[int], None]) -> bytes:
    """Start a one-shot recording server, let ``drive(port)`` connect to it, return the bytes."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result: dict[str, bytes] = {}
        recorder = threading.Thread(target=record_first_bytes, args=(server, result))
        recorder.start()
        drive(port)
        recorder.join(timeout=30)
    if not result.get("data"):
        raise RuntimeError("the client sent nothing")
    return result["data"]


def python_client(
    server_hostname: str | None,
    alpn: list[str] | None,
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> Callable[[int], None]:
    def drive(port: int) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = maximum_version
        if alpn:
            context.set_alpn_protocols(alpn)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            try:
                context.wrap_socket(sock, server_hostname=server_hostname)
            except (ssl.SSLError, OSError):
                pass  # the recorder hangs up instead of answering: expected

    return drive


def openssl_client(*options: str) -> Callable[[int], None]:
    def drive(port: int) -> None:
        subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,  # s_client fails when the server hangs up: expected
        )

    return drive


def openssl_version() -> str:
    out = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@dataclass(frozen=True)
class Capture:
    name: str
    client: str
    options: str
    drive: Callable[[int], None]


def captures() -> list[Capture]:
    python = f"Python {sys.version.split()[0]} ssl ({ssl.OPENSSL_VERSION})"
    items = [
        Capture(
            "python_tls13_sni_alpn",
            python,
            "TLS 1.3 (default max), server_hostname=app.example.com, ALPN h2,http/1.1",
            python_client("app.example.com", ["h2", "http/1.1"]),
        ),
        Capture(
            "python_tls12_sni",
            python,
            "maximum_version=TLSv1_2, server_hostname=legacy.example.com, no ALPN",
            python_client("legacy.example.com", None, ssl.TLSVersion.TLSv1_2),
        ),
        Capture(
            "python_no_sni",
            python,
            "TLS 1.3 (default max), server_hostname=None (no SNI), ALPN http/1.1",
            python_client(None, ["http/1.1"]),
        ),
        Capture(
            "python_large_alpn",
            python,
            "TLS 1.3, server_hostname=big.example.com, 12 ALPN names of 125 bytes "
            "(hello > 1500 bytes)",
            python_client("big.example.com", LONG_ALPN),
        ),
    ]
    if shutil.which("openssl"):
        openssl = f"`openssl s_client` ({openssl_version()})"
        items += [
            Capture(
                "openssl_tls12_sni_alpn",
                openssl,
                "-tls1_2 -servername api.example.com -alpn h2,http/1.1",
                openssl_client("-tls1_2", "-servername", "api.example.com", "-alpn", "h2,http/1.1"),
            ),
            Capture(
                "openssl_tls13_sni_alpn",
                openssl,
                "-tls1_3 -servername api.example.com -alpn h2,http/1.1",
                openssl_client("-tls1_3", "-servername", "api.example.com", "-alpn", "h2,http/1.1"),
            ),
            Capture(
                "openssl_large_multirecord",
                openssl,
                "-tls1_3 -servername split.example.com -alpn <12 names of 125 bytes> "
                "-max_send_frag 512 (hello > 1500 bytes in several 512-byte records)",
                openssl_client(
                    "-tls1_3",
                    "-servername",
                    "split.example.com",
                    "-alpn",
                    ",".join(LONG_ALPN),
                    "-max_send_frag",
                    "512",
                ),
            ),
        ]
    return items


def write_hex(path: Path, item: Capture, data: bytes) -> None:
    lines = [
        f"# client: {item.client}",
        f"# options: {item.options}",
        "# captured by scripts/capture_clienthello.py: every byte the client sent on loopback",
        "# before it waited for a ServerHello (the hello's TLS records, as sent)",
        f"# bytes: {len(data)}",
    ]
    hex_data = data.hex()
    lines += [hex_data[i : i + 64] for i in range(0, len(hex_data), 64)]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="*", help="capture only these names")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for item in captures():
        if args.only and item.name not in args.only:
            continue
        data = capture(item.drive)
        write_hex(args.out / f"{item.name}.hex", item, data)
        print(f"{item.name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
