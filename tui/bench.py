"""Measure what one dashboard refresh costs with many live connections.

    python -m tui.bench [--connections 10000] [--churn 0.1] [--rounds 10]

Builds a headless dashboard fed by a synthetic gateway whose connections churn
(``--churn`` of them replaced and every byte counter changed per round) and
prints the median cost of each step of a refresh: decoding the
``connections.list`` frame, applying the snapshot (keyed diff, filter, sort,
table update) and drawing a full frame. No gateway or network needed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from tlsgate.control.protocol import FrameDecoder, build_response, encode_message
from tui.app import make_app
from tui.messages import SnapshotReceived
from tui.model import Snapshot

NOW = 1_800_000_000.0


class _Quiet:
    """A source that never answers: the benchmark posts snapshots itself."""

    path = "bench"

    async def connect(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None

    async def request(self, request_type: str, **args):
        raise NotImplementedError

    async def subscribe(self, backlog: int, on_event):
        return []


def _connection(n: int, rng: random.Random) -> dict:
    return {
        "id": f"{1000 + n % 4:x}.{n}", "endpoint": f"ep{n % 20}", "url": f"tls://ep{n % 20}.example.com",
        "client": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}:{1024 + n % 60000}", "sni": f"ep{n % 20}.example.com",
        "termination": "upstream", "upstream": "10.1.0.1:443", "bytes_in": rng.randrange(1 << 20),
        "bytes_out": rng.randrange(1 << 24), "start_ts": NOW - rng.randrange(3600), "state": "relaying",
        "worker": 1000 + n % 4,
    }  # fmt: skip


def _status(count: int, round_: int) -> dict:
    return {
        "version": "bench", "pid": 1, "state": "running", "started_at": NOW - 100, "uptime": 100.0,
        "config_file": "bench.toml", "generation": 1, "control_socket": "bench", "listen": [], "metrics": None,
        "endpoints": 20, "workers": [], "totals": {"connections_active": count, "connections_total": count + round_ * 100,
        "connections_closed": round_ * 100, "bytes_in": round_ << 20, "bytes_out": round_ << 24, "worker_restarts": 0,
        "reloads": {"ok": 0, "failed": 0}},
    }  # fmt: skip


async def run(count: int, churn: float, rounds: int) -> dict[str, float]:
    rng = random.Random(7)
    connections = {n: _connection(n, rng) for n in range(count)}
    next_id = count
    app = make_app(_Quiet(), clock=lambda: NOW)
    timings: dict[str, list[float]] = {"decode": [], "apply": [], "draw": []}
    async with app.run_test(size=(160, 50)) as pilot:
        for round_ in range(rounds + 1):
            for n in rng.sample(sorted(connections), int(count * churn)):
                del connections[n]
                connections[next_id] = _connection(next_id, rng)
                next_id += 1
            for conn in connections.values():
                conn["bytes_in"] += 100
                conn["bytes_out"] += 1000
            frame = encode_message(build_response(1, {"connections": list(connections.values())}))
            started = time.perf_counter()
            rows = FrameDecoder().feed(frame)[0]["result"]["connections"]
            decoded = time.perf_counter()
            snapshot = Snapshot(_status(count, round_), [], rows, [], fetched_at=NOW + round_)
            app.on_snapshot_received(SnapshotReceived(snapshot))
            applied = time.perf_counter()
            app.screen._compositor.render_update(full=True)
            drawn = time.perf_counter()
            if round_:  # the first round fills the empty table: not a steady-state refresh
                timings["decode"].append(decoded - started)
                timings["apply"].append(applied - decoded)
                timings["draw"].append(drawn - applied)
            await pilot.pause()
    return {step: statistics.median(values) * 1000 for step, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--churn", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(run(args.connections, args.churn, args.rounds))
    print(
        f"{args.connections} connections, {args.churn:.0%} replaced per refresh (median of {args.rounds}):\n"
        f"  decode connections.list  {result['decode']:7.1f} ms\n"
        f"  apply snapshot           {result['apply']:7.1f} ms   (keyed diff, filter, sort, table update)\n"
        f"  draw a full 160x50 frame {result['draw']:7.1f} ms\n"
        f"  total                    {sum(result.values()):7.1f} ms"
    )


if __name__ == "__main__":
    main()
