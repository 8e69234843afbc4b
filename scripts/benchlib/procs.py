"""Processes the benchmark starts: started in their own session, stopped by pid.

`Processes` remembers every process it started. `stop_all` (called from the
bench's ``finally``, so also on Ctrl-C and errors) sends SIGTERM to each root,
waits a little, then SIGKILLs, by pid, whatever is left of each process tree as it
was seen just before: a killed nginx master does not take its workers with it.

`tree_usage` reads a gateway's whole process tree from /proc: CPU-seconds
(utime + stime of every live process) and memory (the sum of PSS, so the pages a
forking server shares between its master and workers are counted once).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
NOFILE = 200_000
"""File-descriptor limit for the bench and its children: 10,000 relayed connections
need 20,000 sockets in a gateway, and tlsgate adds two splice pipes per connection."""


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE (root may raise the hard limit too); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in ((NOFILE, max(hard, NOFILE)), (min(NOFILE, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, wanted)
            return wanted[0]
        except (ValueError, OSError):
            continue
    return soft


def nofile_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    memory_bytes: int
    processes: int
    user_seconds: float
    """The user-space part of `cpu_seconds` (the rest is the kernel's, on the tree's behalf)."""


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_pids(roots: list[int]) -> list[int]:
    children = children_map()
    pids: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in pids:
            continue
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def tree_usage(roots: list[int]) -> Usage:
    cpu_ticks = user_ticks = 0
    memory = 0
    count = 0
    for pid in tree_pids(roots):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu_ticks += int(fields[11]) + int(fields[12])  # utime, stime
            user_ticks += int(fields[11])
            memory += _pss(pid)
            count += 1
        except (OSError, ValueError):
            continue  # exited between listing and reading
    return Usage(cpu_ticks / _TICKS, memory, count, user_ticks / _TICKS)


def tree_fds(roots: list[int]) -> int:
    """Open file descriptors of a process tree (sockets, pipes, files)."""
    total = 0
    for pid in tree_pids(roots):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


def machine_busy_seconds() -> float:
    """CPU-seconds all cores have spent busy since boot (the first line of /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


def own_cpu_seconds() -> float:
    """CPU-seconds of this process and every process it started, the exited ones included."""
    ticks = 0
    for pid in tree_pids([os.getpid()]):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / _TICKS


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # No smaps_rollup (old kernel): resident pages, which counts shared pages once per process.
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


class Processes:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(
        self, name: str, argv: list[str], env: dict | None = None, **kwargs
    ) -> subprocess.Popen:
        """Start `argv` in its own session (a Ctrl-C reaches only the bench, which then stops it)."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child
        try:
            kwargs.setdefault("stdout", log)
            kwargs.setdefault("stderr", subprocess.STDOUT)
            proc = subprocess.Popen(
                argv,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                stdin=kwargs.pop("stdin", subprocess.DEVNULL),
                **kwargs,
            )
        finally:
            log.close()
        self.started.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        """Stop one process and every process of its tree, by pid."""
        tree = tree_pids([proc.pid]) if proc.poll() is None else []
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.wait(5)
        self.started = [(n, p) for n, p in self.started if p is not proc]

    def stop_all(self) -> None:
        # Newest first: clients and gateways before the origin they talk to.
        for _name, proc in reversed(list(self.started)):
            self.stop(proc)


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
