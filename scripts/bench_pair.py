#!/usr/bin/env python3
"""Two gateways side by side: both loaded at once, each by its own wrk, CPU per connection.

A developer tool, not a test. On this small shared machine the gateway's CPU time per
connection moves by up to 8% between two runs of ``scripts/bench`` a minute apart, because
whatever else the machine does moves it. Here the two gateways (two tlsgate trees, or
tlsgate and HAProxy) serve at the same moments: one origin, two wrk processes started
together (1 thread and 16 connections each, ``Connection: close``, so every request is a
new connection and a full TLS handshake), and each gateway's CPU read from /proc for its
whole process tree before and after each round. What moves the machine moves both sides:
with the same code on both, single rounds of B ÷ A came out at 0.96-1.03 and the median of
six at 0.997, where a change worth 3% disappears in the spread between ``scripts/bench`` runs.

Both sides still compete for the same two cores, so a side that costs more CPU also leaves
the other less: read the CPU per connection, not the rates. Run it both ways round
(A B, then B A) before believing a difference of a percent or two. Each gateway runs at
about half the rate it reaches alone, and tlsgate's CPU per connection grows as its load
falls (docs/benchmarks.md, "What limits tlsgate now"), so ``. haproxy`` shows a larger
ratio than ``scripts/bench``: compare trees with this, gateways with that.

    scripts/bench_pair.py HEAD~1 .            # the last commit's change, on the work tree
    scripts/bench_pair.py . haproxy           # tlsgate and HAProxy at the same moments
    scripts/bench_pair.py /tmp/experiment .   # another tree (a private copy with a change)

A side is ``haproxy``, a directory holding a tlsgate tree (``.`` is this checkout's work
tree) or a revision of this checkout (``git archive``). ``--case term`` loads the endpoint
that terminates TLS at the gateway instead of the passthrough one. Installs what it needs
as ``scripts/bench`` does; stops every process it started, by pid.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib

from benchlib import system  # noqa: E402

WRK_CONNECTIONS = 16
"""Per side: the two together load the machine as case 1 of ``scripts/bench`` does (32)."""


@dataclass(frozen=True)
class Side:
    label: str
    """What the user named: ``haproxy``, a directory or a revision."""
    tree: Path | None
    """The tlsgate tree to run (None for HAProxy)."""

    @property
    def haproxy(self) -> bool:
        return self.tree is None


@dataclass(frozen=True)
class RoundResult:
    rate: float
    cpu_us: float
    """Gateway CPU (master and workers, user + system) per connection, µs."""
    user_us: float


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_pair.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("a", help="side A: haproxy, a tlsgate tree (directory) or a revision")
    parser.add_argument("b", help="side B, the same kinds")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    parser.add_argument("--seconds", type=int, default=6, help="seconds per round (default 6)")
    parser.add_argument("--case", choices=("pass", "term"), default="pass")
    parser.add_argument("--keep", action="store_true", help="keep the run directory and logs")
    args = parser.parse_args(argv[1:])
    if not 1 <= args.rounds <= 50 or not 2 <= args.seconds <= 60:
        parser.error("--rounds wants 1-50 and --seconds 2-60 (the run must stop by itself)")
    try:
        system.ensure_packages()
        system.ensure_python(argv)
    except (system.SetupError, OSError) as e:
        print(f"bench_pair: {e}", file=sys.stderr)
        return 1
    # Imported only now: the interpreter may just have been replaced by .venv's.
    from benchlib.procs import Processes, raise_nofile_limit

    raise_nofile_limit()
    root = Path(tempfile.mkdtemp(prefix="tlsgate-pair-"))
    procs = Processes(root)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        sides = [
            _resolve(label, root / f"tree-{name}") for name, label in (("a", args.a), ("b", args.b))
        ]
        results = _run(root, procs, sides, args)
    except (system.SetupError, RuntimeError) as e:
        print(f"bench_pair: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_pair: interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"bench_pair: run directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    _summarise(results)
    return 0


def _resolve(label: str, export_to: Path) -> Side:
    if label == "haproxy":
        return Side(label, None)
    path = Path(label)
    if path.is_dir():
        if not (path / "tlsgate" / "__init__.py").exists():
            raise system.SetupError(f"{label}: not a tlsgate tree (no tlsgate/__init__.py)")
        return Side(label, path.resolve())
    described = system.export_tree(label, export_to)
    return Side(f"{label} ({described})", export_to)


def _run(root: Path, procs, sides: list[Side], args) -> list[tuple[RoundResult, RoundResult]]:
    from benchlib.load import run_wrk, wait_ready, write_wrk_script
    from benchlib.procs import tree_usage
    from benchlib.targets import PASS_HOST, SMALL_PATH, Workspace

    ws = Workspace(root)
    ws.prepare()
    origin = ws.start_origin(procs)
    if error := wait_ready(origin.pass_port, PASS_HOST, SMALL_PATH, 20):
        raise RuntimeError(f"the origin is not serving: {error}\n{procs.log_tail('origin')}")
    targets = []
    for name, side in zip("ab", sides, strict=True):
        instance = f"haproxy-{name}" if side.haproxy else f"tlsgate-{name}"
        if side.haproxy:
            target = ws.start_haproxy(procs, instance)
        else:
            target = ws.start_tlsgate(procs, instance, side.tree)
        port = target.term_port if args.case == "term" else target.pass_port
        host = target.term_host() if args.case == "term" else PASS_HOST
        if port is None:
            raise RuntimeError(f"{side.label} cannot terminate TLS: {target.term_note}")
        if error := wait_ready(port, host, SMALL_PATH, 20):
            tail = procs.log_tail(instance)
            raise RuntimeError(f"{side.label} is not serving {host}: {error}\n{tail}")
        targets.append((target, host, port))
    script = write_wrk_script(root)
    print(
        f"bench_pair: A = {sides[0].label}, B = {sides[1].label}; case {args.case}, "
        f"{args.rounds} rounds of {args.seconds} s, {WRK_CONNECTIONS} connections each",
        flush=True,
    )

    def load(host: str, port: int):
        return run_wrk(
            script, host, port, SMALL_PATH, seconds=args.seconds, threads=1,
            connections=WRK_CONNECTIONS, close=True,
        )  # fmt: skip

    results = []
    with ThreadPoolExecutor(2) as pool:
        for number in range(1, args.rounds + 1):
            before = [tree_usage(target.roots()) for target, _, _ in targets]
            loads = [pool.submit(load, host, port) for _, host, port in targets]
            outcomes = [future.result() for future in loads]
            after = [tree_usage(target.roots()) for target, _, _ in targets]
            pair = []
            for outcome, start, end in zip(outcomes, before, after, strict=True):
                if outcome.errors or not outcome.requests:
                    raise RuntimeError(f"round {number}: wrk saw {outcome.errors} errors")
                per_conn = 1e6 / outcome.requests
                pair.append(
                    RoundResult(
                        outcome.requests / outcome.seconds,
                        (end.cpu_seconds - start.cpu_seconds) * per_conn,
                        (end.user_seconds - start.user_seconds) * per_conn,
                    )
                )
            a, b = pair
            print(
                f"round {number}: A {a.rate:,.0f} conn/s, {a.cpu_us:.0f} µs/conn (user {a.user_us:.0f})"
                f" | B {b.rate:,.0f} conn/s, {b.cpu_us:.0f} µs/conn (user {b.user_us:.0f})"
                f" | B/A CPU {b.cpu_us / a.cpu_us:.3f}, user {b.user_us / a.user_us:.3f}",
                flush=True,
            )
            results.append((a, b))
    return results


def _summarise(results: list[tuple[RoundResult, RoundResult]]) -> None:
    """Every round is in `results` (a round with wrk errors ends the run before this)."""

    def median(values) -> float:
        return statistics.median(list(values))

    cpu = [b.cpu_us / a.cpu_us for a, b in results]
    user = [b.user_us / a.user_us for a, b in results]
    rate = [b.rate / a.rate for a, b in results]
    print(
        f"median of {len(results)} rounds: A {median(a.cpu_us for a, _ in results):.0f} µs/conn, "
        f"B {median(b.cpu_us for _, b in results):.0f} µs/conn; "
        f"B/A CPU per connection {median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f}), "
        f"user {median(user):.3f}, rate {median(rate):.3f}"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
