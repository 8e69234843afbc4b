"""The five cases of issue 6, each measured on every target, runs interleaved.

A run of a case visits every target in turn before the next run starts, so a
drift of the machine (another tenant, thermal) spreads over all targets instead
of landing on one; each run starts one target later than the run before, so no
target always follows the same one (and whatever that one leaves behind: sockets
still closing, a busy origin). Each measurement reads the gateway's process tree
before and after (CPU-seconds) and samples its memory while the load runs (peak PSS).

Case ids: ``pass_conn`` (1), ``pass_tput`` (2), ``term_conn`` and ``term_tput``
(3), ``idle`` (4), ``idle_tls`` (4b: idle connections the gateway terminates),
``latency`` (5).
"""

from __future__ import annotations

import json
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchlib.load import LoadError, interleaved_connection_latencies, run_wrk, wait_ready
from benchlib.procs import Processes, tree_fds, tree_usage
from benchlib.targets import BIG_FILE, PASS_HOST, SMALL_BODY, SMALL_PATH, Target

IDLE_CLIENT = Path(__file__).with_name("idle_client.py")


@dataclass
class Settings:
    runs: int
    seconds: int
    cases: tuple[str, ...]
    idle_connections: int = 10_000
    idle_tls_connections: int = 2_000
    """case 4b's: each costs the gateway a full handshake and TLS state, so fewer than case 4's."""
    rate_connections: int = 32
    """wrk connections for the new-connection cases (each request on a new TCP+TLS connection)."""
    tput_connections: int = 4
    threads: int = 2
    latency_seconds: int = 3
    latency_samples: int = 300


@dataclass
class Sample:
    """One run of one case on one target."""

    case: str
    target: str
    run: int
    seconds: float = 0.0
    requests: int = 0
    bytes: int = 0
    errors: int = 0
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    values: dict[str, float] = field(default_factory=dict)
    failure: str = ""


class MemorySampler:
    """Peak PSS of a process tree, sampled every 0.5 s on a thread while the load runs."""

    def __init__(self, roots: list[int]):
        self.roots = roots
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.roots:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.roots:
            self._thread.join()
            self.peak = max(self.peak, tree_usage(self.roots).memory_bytes)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, tree_usage(self.roots).memory_bytes)


class Runner:
    def __init__(
        self,
        settings: Settings,
        procs: Processes,
        wrk_script: Path,
        deadline: float,
        restart: Callable[[str, str], Target],
    ):
        self.settings = settings
        self.procs = procs
        self.wrk_script = wrk_script
        self.deadline = deadline
        self.restart = restart
        """restart(target name, instance name) -> a fresh, ready instance of that gateway (case 4)."""
        self.samples: list[Sample] = []
        self.skipped: list[str] = []

    def out_of_time(self, needed: float) -> bool:
        return time.monotonic() + needed > self.deadline

    # -- wrk-driven cases --------------------------------------------------------

    def wrk_case(self, case: str, targets: list[Target]) -> None:
        s = self.settings
        term = case.startswith("term")
        rate = case.endswith("conn")
        usable = [t for t in targets if not term or t.term_port is not None]
        for run in range(1, s.runs + 1):
            shift = (run - 1) % len(usable)
            for target in usable[shift:] + usable[:shift]:
                if self.out_of_time(s.seconds + 10):
                    self.skipped.append(f"{case} run {run} on {target.name}: out of time")
                    continue
                port = target.term_port if term else target.pass_port
                host = target.term_host() if term else PASS_HOST
                assert port is not None
                roots = target.roots() if target.is_gateway else []
                before = tree_usage(roots) if roots else None
                sample = Sample(case, target.name, run)
                with MemorySampler(roots) as memory:
                    try:
                        result = run_wrk(
                            self.wrk_script, host, port, SMALL_PATH if rate else f"/{BIG_FILE}",
                            seconds=s.seconds, threads=s.threads,
                            connections=s.rate_connections if rate else s.tput_connections,
                            close=rate, timeout=5 if rate else 60,
                        )  # fmt: skip
                    except LoadError as e:
                        sample.failure = str(e)
                        result = None
                if result is not None:
                    sample.seconds, sample.requests, sample.bytes = (
                        result.seconds,
                        result.requests,
                        result.bytes,
                    )
                    sample.errors = result.errors
                if before is not None:
                    sample.cpu_seconds = tree_usage(roots).cpu_seconds - before.cpu_seconds
                    sample.memory_bytes = memory.peak
                self.samples.append(sample)
                _progress(sample)

    def warm_up(self, targets: list[Target], seconds: int = 1) -> None:
        for target in targets:
            try:
                run_wrk(self.wrk_script, PASS_HOST, target.pass_port, SMALL_PATH, seconds=seconds,
                        threads=self.settings.threads, connections=self.settings.rate_connections, close=True)  # fmt: skip
            except LoadError as e:
                print(f"bench: warm-up of {target.name} failed: {e}", flush=True)

    # -- case 5: latency -----------------------------------------------------------

    def latency_case(self, targets: list[Target]) -> None:
        """Per run: each target's request latency on one open connection (wrk), then the
        new-connection latency of all targets at once, interleaved (see
        `interleaved_connection_latencies`)."""
        s = self.settings
        for run in range(1, s.runs + 1):
            measured: list[tuple[Sample, Target]] = []
            for target in targets:
                if self.out_of_time(s.latency_seconds * 2 + 10):
                    self.skipped.append(f"latency run {run} on {target.name}: out of time")
                    continue
                sample = Sample("latency", target.name, run)
                try:
                    result = run_wrk(self.wrk_script, PASS_HOST, target.pass_port, SMALL_PATH,
                                     seconds=s.latency_seconds, threads=1, connections=1, close=False)  # fmt: skip
                    sample.values["request_p50_us"] = result.p50_us
                    sample.values["request_p99_us"] = result.p99_us
                    sample.requests, sample.errors = result.requests, result.errors
                    measured.append((sample, target))
                except (LoadError, OSError) as e:
                    sample.failure = f"{type(e).__name__}: {e}"
                self.samples.append(sample)
            try:
                times = interleaved_connection_latencies(
                    {target.name: target.pass_port for _, target in measured},
                    PASS_HOST,
                    SMALL_PATH,
                    s.latency_samples,
                    s.latency_seconds * len(measured),
                )
            except (LoadError, OSError) as e:
                for sample, _ in measured:
                    sample.failure = f"{type(e).__name__}: {e}"
                times = {}
            for sample, target in measured:
                if target.name in times:
                    sample.values["connection_p50_us"] = _percentile(times[target.name], 50) * 1e6
                    sample.values["connection_p99_us"] = _percentile(times[target.name], 99) * 1e6
                    sample.values["connection_samples"] = len(times[target.name])
                _progress(sample)

    # -- cases 4 and 4b: idle connections -------------------------------------------

    def idle_case(self, gateway_names: list[str]) -> None:
        self._idle_runs("idle", gateway_names)

    def idle_tls_case(self, targets: list[Target]) -> None:
        """Case 4b on the gateways that terminate; the others are under "Not measured"."""
        self._idle_runs("idle_tls", [t.name for t in targets if t.is_gateway and t.term_port])

    def _idle_runs(self, case: str, gateway_names: list[str]) -> None:
        s = self.settings
        for run in range(1, s.runs + 1):
            for name in gateway_names:
                if self.out_of_time(60):
                    self.skipped.append(f"{case} run {run} on {name}: out of time")
                    continue
                sample = Sample(case, name, run)
                target = self.restart(name, f"{name}-{case}-{run}")
                try:
                    self._hold_idle(target, sample)
                finally:
                    for proc in target.procs:
                        self.procs.stop(proc, grace=10)
                self.samples.append(sample)
                _progress(sample)

    def _hold_idle(self, target: Target, sample: Sample) -> None:
        """Memory and descriptors per connection held: the gateway's tree before and after."""
        if sample.case == "idle_tls":
            count = self.settings.idle_tls_connections
            port, host = target.term_port, target.term_host()
            mode = ["--tls", SMALL_PATH, "--expect", SMALL_BODY]
        else:
            count = self.settings.idle_connections
            port, host = target.pass_port, PASS_HOST
            mode = []
        if port is None:  # a fresh instance whose termination was refused this time
            sample.failure = f"no termination: {target.term_note}"
            return
        error = wait_ready(port, host, SMALL_PATH, 20)
        if error:
            sample.failure = f"not ready: {error}"
            return
        time.sleep(0.5)
        before = tree_usage(target.roots())
        fds_before = tree_fds(target.roots())
        start = time.monotonic()
        client_name = f"idle-client-{target.name}"
        client = self.procs.start(
            client_name,
            [sys.executable, str(IDLE_CLIENT), *mode, str(port), host, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            line = _read_line(client, timeout=120)
            if not line:
                sample.failure = "the idle client reported nothing: " + self.procs.log_tail(
                    client_name
                )
                return
            report = json.loads(line)
            sample.seconds = time.monotonic() - start
            time.sleep(1.0)  # let the gateway finish any bookkeeping of the last connections
            after = tree_usage(target.roots())
            fds_after = tree_fds(target.roots())
            held = report["ok"]
            sample.requests = held
            sample.errors = report["failed"]
            sample.values["held"] = held
            sample.values["per_connection_bytes"] = (
                after.memory_bytes - before.memory_bytes
            ) / max(held, 1)
            sample.values["baseline_bytes"] = before.memory_bytes
            sample.values["fds_per_connection"] = (fds_after - fds_before) / max(held, 1)
            sample.cpu_seconds = after.cpu_seconds - before.cpu_seconds
            sample.memory_bytes = after.memory_bytes
            if report["errors"]:
                sample.failure = ", ".join(f"{k}: {v}" for k, v in report["errors"].items())
        finally:
            if client.stdin:
                try:
                    client.stdin.write(b"done\n")
                    client.stdin.close()
                except OSError:
                    pass
            self.procs.stop(client, grace=10)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return ""
    return proc.stdout.readline().decode().strip()


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def _progress(sample: Sample) -> None:
    if sample.failure and not sample.requests:
        print(
            f"  {sample.case:<9} run {sample.run} {sample.target:<9} FAILED: {sample.failure}",
            flush=True,
        )
        return
    parts = []
    if sample.case in ("idle", "idle_tls"):
        parts.append(f"held {sample.values.get('held', 0):.0f}")
        parts.append(f"{sample.values.get('per_connection_bytes', 0) / 1024:.1f} KiB/conn")
        parts.append(f"{sample.values.get('fds_per_connection', 0):.1f} fds/conn")
    elif sample.case == "latency":
        parts.append(f"req p50 {sample.values.get('request_p50_us', 0):.0f}us")
        parts.append(f"conn p50 {sample.values.get('connection_p50_us', 0):.0f}us")
    else:
        parts.append(f"{sample.requests / max(sample.seconds, 1e-9):.0f} req/s")
        parts.append(f"{sample.bytes / max(sample.seconds, 1e-9) / 1e6:.0f} MB/s")
    if sample.cpu_seconds is not None:
        parts.append(f"cpu {sample.cpu_seconds:.2f}s")
    if sample.errors:
        parts.append(f"{sample.errors} errors")
    if sample.failure:
        parts.append(f"({sample.failure[:100]})")
    print(f"  {sample.case:<9} run {sample.run} {sample.target:<9} " + ", ".join(parts), flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
