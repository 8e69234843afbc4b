"""Cases 4 and 4b's client: hold COUNT idle connections open through a gateway.

Run by the bench as its own process (so its descriptors and CPU are its own):

``python idle_client.py PORT SNI COUNT`` (case 4, passthrough): each connection sends
a real ClientHello (made once by Python's ssl module for SNI) and waits for the first
record of the server's answer, which proves the gateway routed it and dialled the
origin.

``python idle_client.py --tls PATH --expect BODY PORT SNI COUNT`` (case 4b, the
gateway terminates): each connection completes a full TLS handshake with the gateway
(no verification; SNI = the host), sends one HTTP/1.1 keep-alive ``GET PATH`` with
``Host: SNI`` and reads the response, whose body must be BODY: that proves the
gateway decrypted, dialled the origin and relayed both ways.

Then every connection stays open and silent. When every connection is settled it
prints one JSON line (``{"ok": N, "failed": N, "errors": {...}}``) and holds them all
until its stdin closes or says anything, then exits (the kernel closes the sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

CONNECT_AT_ONCE = 200
ANSWER_TIMEOUT = 10.0
T = TypeVar("T")

# opens one connection, proves it works and returns its writer (to hold), or raises Failed
Opener = Callable[[], Awaitable[asyncio.StreamWriter]]


class Failed(Exception):
    """One connection did not make it; the message is the key it is counted under."""


async def step(phase: str, awaitable: Awaitable[T]) -> T:
    """`awaitable` within ANSWER_TIMEOUT; its failure becomes Failed("phase: what")."""
    try:
        return await asyncio.wait_for(awaitable, ANSWER_TIMEOUT)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
        raise Failed(f"{phase}: {type(e).__name__}") from e  # ssl.SSLError is an OSError


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_hello(sni: str) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def passthrough_opener(port: int, sni: str) -> Opener:
    hello = client_hello(sni)

    async def open_one() -> asyncio.StreamWriter:
        reader, writer = await step("connect", asyncio.open_connection("127.0.0.1", port))
        try:
            writer.write(hello)
            first = await step("answer", reader.readexactly(5))
            if first[0] != 0x16:  # a handshake record (ServerHello), not an alert
                raise Failed(f"answer: record type {first[0]}")
        except Failed:
            writer.close()
            raise
        return writer

    return open_one


def terminated_opener(port: int, sni: str, path: str, expect: str) -> Opener:
    ctx = client_context()
    request = f"GET {path} HTTP/1.1\r\nHost: {sni}\r\n\r\n".encode()

    async def open_one() -> asyncio.StreamWriter:
        reader, writer = await step(
            "handshake", asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni)
        )
        try:
            writer.write(request)
            head = (await step("answer", reader.readuntil(b"\r\n\r\n"))).decode("latin-1")
            status, *lines = head.split("\r\n")
            if status.split(" ")[1:2] != ["200"]:
                raise Failed(f"answer: status {status[:40]!r}")
            fields = dict(line.lower().split(":", 1) for line in lines if ":" in line)
            length = fields.get("content-length", "").strip()
            if not length.isdigit():  # keep-alive needs a framed body
                raise Failed(f"answer: Content-Length {length!r}")
            body = await step("answer", reader.readexactly(int(length)))
            if body.decode("latin-1") != expect:
                raise Failed(f"answer: body {body[:40]!r}")
        except Failed:
            writer.close()
            raise
        return writer

    return open_one


async def hold(open_one: Opener, count: int) -> None:
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    held: list[asyncio.StreamWriter] = []
    errors: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        async with gate:
            try:
                held.append(await open_one())
            except Failed as e:
                errors[str(e)] += 1

    await asyncio.gather(*(one() for _ in range(count)))
    print(
        json.dumps({"ok": len(held), "failed": count - len(held), "errors": dict(errors)}),
        flush=True,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    os._exit(0)  # the kernel closes 10,000 sockets faster than 10,000 transports would


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("sni")
    parser.add_argument("count", type=int)
    parser.add_argument("--tls", metavar="PATH", help="terminated at the gateway: GET PATH")
    parser.add_argument("--expect", default="", help="with --tls: the body the response must have")
    args = parser.parse_args()
    if args.tls:
        open_one = terminated_opener(args.port, args.sni, args.tls, args.expect)
    else:
        open_one = passthrough_opener(args.port, args.sni)
    asyncio.run(hold(open_one, args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
