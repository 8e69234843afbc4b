"""Regenerate the seed corpora in tests/data/fuzz/seeds/<target>/ from the repository's real inputs.

    python scripts/fuzz/make_seeds.py

- clienthello: every captured hello in tests/data/clienthello/*.hex as sent, and
  re-cut into 1-, 7- and 100-byte records (the fragmentation peers get wrong), and
  cut off one byte short (the parser must say "need more");
- proxy_header: headers from `build_header` (v1 and v2; IPv4, IPv6, mixed; with
  TLVs) plus hand-made v2 LOCAL, UNIX, CRC32C and NOOP ones and v1 UNKNOWN;
- config: tests/data/config/{good,bad}/*.toml and conf/*.toml;
- policy: tests/data/policy/* and the ngrok examples (YAML and JSON).

Files are named after what they came from; the directories are rewritten whole.
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tlsgate.proto.proxy_protocol import V2_SIGNATURE, build_header, crc32c  # noqa: E402

SEEDS = REPO / "tests" / "data" / "fuzz" / "seeds"


def read_hex(path: Path) -> bytes:
    lines = path.read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


def recut(hello: bytes, size: int) -> bytes:
    """The handshake message of ``hello``'s records, re-cut into records of ``size`` bytes."""
    message = bytearray()
    pos = 0
    while pos < len(hello):
        length = int.from_bytes(hello[pos + 3 : pos + 5], "big")
        message += hello[pos + 5 : pos + 5 + length]
        pos += 5 + length
    chunks = (message[i : i + size] for i in range(0, len(message), size))
    return b"".join(b"\x16\x03\x01" + struct.pack("!H", len(c)) + c for c in chunks)


def clienthello_seeds() -> dict[str, bytes]:
    seeds = {}
    for path in sorted((REPO / "tests" / "data" / "clienthello").glob("*.hex")):
        hello = read_hex(path)
        seeds[f"{path.stem}.bin"] = hello
        seeds[f"{path.stem}.short.bin"] = hello[:-1]
        for size in (1, 7, 100):
            seeds[f"{path.stem}.records{size}.bin"] = recut(hello, size)
    return seeds


def _v2(command: int, family: int, addresses: bytes, tlvs: bytes = b"") -> bytes:
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def proxy_header_seeds() -> dict[str, bytes]:
    v4 = ("192.0.2.1", 50000), ("127.0.0.1", 8443)
    v6 = ("2001:db8::1", 50000), ("::1", 8443)
    mixed = ("192.0.2.1", 50000), ("::1", 8443)
    seeds = {
        "v1_tcp4.bin": build_header(1, *v4),
        "v1_tcp6.bin": build_header(1, *v6),
        "v1_mixed.bin": build_header(1, *mixed),
        "v1_unknown.bin": b"PROXY UNKNOWN\r\n",
        "v1_unknown_addresses.bin": b"PROXY UNKNOWN ::1 ::2 1 2\r\n\x16\x03\x01",
        "v2_tcp4.bin": build_header(2, *v4),
        "v2_tcp6_tlvs.bin": build_header(2, *v6, authority="app.example.com", alpn=b"h2"),
        "v2_mixed_payload.bin": build_header(2, *mixed, authority="a.example") + b"\x16\x03\x01",
        "v2_local.bin": _v2(0, 0x00, b""),
        "v2_unix.bin": _v2(1, 0x31, b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0")),
        "v2_udp4_noop.bin": _v2(1, 0x12, bytes(12), b"\x04\x00\x03abc"),
        "v2_ssl_tlv.bin": _v2(1, 0x11, bytes(12), b"\x20\x00\x05\x07\x00\x00\x00\x00"),
    }
    addresses = bytes(12)
    crc_tlv = b"\x03\x00\x04\x00\x00\x00\x00"
    unsigned = _v2(1, 0x11, addresses, crc_tlv)
    checksum = crc32c(unsigned).to_bytes(4, "big")
    seeds["v2_crc32c.bin"] = unsigned[:-4] + checksum
    return seeds


def copy_seeds(*patterns: str) -> dict[str, bytes]:
    seeds = {}
    for pattern in patterns:
        for path in sorted(REPO.glob(pattern)):
            name = f"{path.parent.name}_{path.name}"
            seeds[name] = path.read_bytes()
    return seeds


def main() -> int:
    targets = {
        "clienthello": clienthello_seeds(),
        "proxy_header": proxy_header_seeds(),
        "config": copy_seeds("tests/data/config/*/*.toml", "conf/*.toml"),
        "policy": copy_seeds(
            "tests/data/policy/*.y*ml",
            "tests/data/policy/*.json",
            "tests/data/ngrok-policy-examples/*.yml",
            "tests/data/ngrok-policy-examples/*.json",
        ),
    }
    for target, seeds in targets.items():
        directory = SEEDS / target
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds in {directory.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
