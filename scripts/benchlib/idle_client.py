"""Case 4's client: hold COUNT idle TLS connections open through a gateway.

Run by the bench as its own process (so its descriptors and CPU are its own):
``python idle_client.py PORT SNI COUNT``. Each connection sends a real ClientHello
(made once by Python's ssl module for SNI) and waits for the first record of the
server's answer, which proves the gateway routed it and dialled the origin; then it
stays open and silent. When every connection is settled it prints one JSON line
(``{"ok": N, "failed": N, "errors": {...}}``) and holds them all until its stdin
closes or says anything, then exits (the kernel closes the sockets).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import ssl
import sys

CONNECT_AT_ONCE = 200
ANSWER_TIMEOUT = 10.0


def client_hello(sni: str) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


async def hold(port: int, sni: str, count: int) -> None:
    hello = client_hello(sni)
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    held: list[asyncio.StreamWriter] = []
    errors: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), ANSWER_TIMEOUT
                )
            except (OSError, TimeoutError) as e:
                errors[f"connect: {type(e).__name__}"] += 1
                return
            try:
                writer.write(hello)
                first = await asyncio.wait_for(reader.readexactly(5), ANSWER_TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                errors[f"answer: {type(e).__name__}"] += 1
                writer.close()
                return
            if first[0] != 0x16:  # a handshake record (ServerHello), not an alert
                errors[f"answer: record type {first[0]}"] += 1
                writer.close()
                return
            held.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    print(
        json.dumps({"ok": len(held), "failed": count - len(held), "errors": dict(errors)}),
        flush=True,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    os._exit(0)  # the kernel closes 10,000 sockets faster than 10,000 transports would


def main() -> int:
    port, sni, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    asyncio.run(hold(port, sni, count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
