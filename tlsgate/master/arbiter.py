"""The master process: binds, forks workers, supervises them, reloads and stops.

Single-threaded and gevent-free (gevent is imported only in a forked child).
Signal handlers only queue the signal; the loop wakes through the wakeup fd and
dispatches `handle_<name>()`, where all logging happens.

Generations: every (re)load forks a new generation of workers with the new
config; the previous generation gets SIGTERM and drains its open connections
while the new one already accepts on the same, never-closed, listening sockets.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from tlsgate.config.model import Config, HostPort
from tlsgate.errors import EXIT_FAILURE, EXIT_OK, ConfigError
from tlsgate.master import pidfile
from tlsgate.master.sockets import BindError, create_listeners

log = logging.getLogger("tlsgate.master")

#: A worker that dies sooner than this after its start counts as failing at boot.
FAST_FAILURE_SECONDS = 2.0
MAX_BACKOFF = 30.0
#: Extra time a stopping worker gets after its drain deadline before SIGKILL.
KILL_GRACE = 5.0

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)


@dataclass
class WorkerSlot:
    index: int
    generation: int
    pid: int = 0
    started_at: float = 0.0
    fast_failures: int = 0
    respawn_at: float | None = None
    stop_deadline: float | None = None


class Arbiter:
    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None):
        self.config = config
        self.reload_config = reload_config
        self.generation = 0
        self.listeners: dict[HostPort, socket.socket] = {}
        self.slots: list[WorkerSlot] = []
        """The current generation's slots, respawned when their worker dies."""
        self.retiring: dict[int, WorkerSlot] = {}
        """Workers of older generations that are draining, by pid."""
        self.pid = os.getpid()
        self._signal_queue: list[int] = []
        self._stopping: str | None = None
        self._stop_deadline = 0.0

    # -- lifecycle --------------------------------------------------------------

    def run(self) -> int:
        try:
            self.listeners = create_listeners(self.config.gateway.listen)
        except BindError as e:
            log.error("%s", e)
            return EXIT_FAILURE
        try:
            prepare_state(self.config)
        except OSError as e:
            log.error("cannot prepare the state directory or events file: %s", e)
            return EXIT_FAILURE
        self._install_signals()
        pidfile.write(self.config.gateway.state_dir)
        try:
            log.info(
                "tlsgate %s listening on %s with %d workers (%d endpoints, config %s)",
                _version(),
                ", ".join(str(a) for a in self.listeners),
                self.config.gateway.workers,
                len(self.config.endpoints),
                self.config.source,
            )
            self._start_generation()
            self._loop()
        finally:
            pidfile.remove(self.config.gateway.state_dir)
        log.info("stopped")
        return EXIT_OK

    def _loop(self) -> None:
        while True:
            self._dispatch_signals()
            self._reap()
            now = time.monotonic()
            if self._stopping:
                if not self._all_pids():
                    return
                if now >= self._stop_deadline:
                    self._kill_all(signal.SIGKILL)
            else:
                self._respawn_due(now)
                self._kill_overdue_retirees(now)
            self._sleep(self._next_wakeup(now))

    # -- signals ----------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w)
        for sig in _SIGNALS:
            signal.signal(sig, self._queue_signal)

    def _queue_signal(self, signum, frame) -> None:
        # No logging here: only queue, the loop does the work.
        self._signal_queue.append(signum)

    def _dispatch_signals(self) -> None:
        while self._signal_queue:
            signum = self._signal_queue.pop(0)
            name = signal.Signals(signum).name
            getattr(self, f"handle_{name.lower()}")()

    def handle_sigchld(self) -> None:
        pass  # reaping happens on every loop turn

    def handle_sigterm(self) -> None:
        self._begin_stop("graceful", signal.SIGTERM, self.config.gateway.drain_timeout)

    def handle_sigint(self) -> None:
        self._begin_stop("fast", signal.SIGINT, 0.0)

    handle_sigquit = handle_sigint

    def handle_sighup(self) -> None:
        if self._stopping:
            return
        if self.reload_config is None:
            log.warning("reload requested, but this gateway has no config file to re-read")
            return
        try:
            new_config = self.reload_config()
        except ConfigError as e:
            log.error("reload failed; still serving the previous config:")
            for problem in e.problems:
                log.error("  %s", problem)
            return
        try:
            listeners = create_listeners(new_config.gateway.listen, self.listeners)
        except BindError as e:
            log.error("reload failed; still serving the previous config: %s", e)
            return
        for address, sock in self.listeners.items():
            if address not in listeners:
                sock.close()
        self.listeners = listeners
        self.config = new_config
        old = self.slots
        self._start_generation()
        now = time.monotonic()
        for slot in old:
            if slot.pid:
                slot.stop_deadline = now + new_config.gateway.drain_timeout + KILL_GRACE
                self.retiring[slot.pid] = slot
                _signal_pid(slot.pid, signal.SIGTERM)
        log.info(
            "reloaded %s: generation %d started, %d workers of the previous one draining",
            new_config.source,
            self.generation,
            sum(1 for s in old if s.pid),
        )

    def _begin_stop(self, how: str, sig: int, drain: float) -> None:
        if self._stopping == "fast" or (self._stopping and how == "graceful"):
            return
        self._stopping = how
        self._stop_deadline = time.monotonic() + drain + KILL_GRACE
        log.info("%s stop: %s", how, "draining open connections" if drain else "closing connections")
        for sock in self.listeners.values():
            sock.close()
        self.listeners = {}
        self._kill_all(sig)

    # -- workers ----------------------------------------------------------------

    def _start_generation(self) -> None:
        self.generation += 1
        self.slots = [WorkerSlot(i, self.generation) for i in range(self.config.gateway.workers)]
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.respawn_at = None
        slot.started_at = time.monotonic()
        config, listeners = self.config, list(self.listeners.values())
        pid = os.fork()
        if pid:
            slot.pid = pid
            return
        code = EXIT_FAILURE
        try:
            signal.set_wakeup_fd(-1)
            for sig in _SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            from tlsgate.worker.process import run_worker

            code = run_worker(config, listeners, slot.generation, self.pid)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._worker_exited(pid, status)

    def _worker_exited(self, pid: int, status: int) -> None:
        how = _describe_status(status)
        if pid in self.retiring:
            slot = self.retiring.pop(pid)
            log.info("worker %d (generation %d) finished draining: %s", pid, slot.generation, how)
            return
        slot = next((s for s in self.slots if s.pid == pid), None)
        if slot is None:
            return
        slot.pid = 0
        if self._stopping:
            log.info("worker %d stopped: %s", pid, how)
            return
        now = time.monotonic()
        lived = now - slot.started_at
        slot.fast_failures = slot.fast_failures + 1 if lived < FAST_FAILURE_SECONDS else 0
        delay = respawn_delay(slot.fast_failures)
        slot.respawn_at = now + delay
        level = logging.ERROR if os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) else logging.WARNING
        hint = " Perhaps out of memory?" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else ""
        log.log(
            level,
            "worker %d (generation %d, slot %d) %s after %.1fs; respawning in %.1fs.%s",
            pid, slot.generation, slot.index, how, lived, delay, hint,
        )

    def _respawn_due(self, now: float) -> None:
        for slot in self.slots:
            if not slot.pid and slot.respawn_at is not None and slot.respawn_at <= now:
                self._spawn(slot)
                log.info("worker %d started in slot %d (generation %d)", slot.pid, slot.index, slot.generation)

    def _kill_overdue_retirees(self, now: float) -> None:
        for pid, slot in self.retiring.items():
            if slot.stop_deadline is not None and now >= slot.stop_deadline:
                log.warning("worker %d (generation %d) is past its drain deadline; killing it", pid, slot.generation)
                _signal_pid(pid, signal.SIGKILL)
                slot.stop_deadline = None

    def _all_pids(self) -> list[int]:
        return [s.pid for s in self.slots if s.pid] + list(self.retiring)

    def _kill_all(self, sig: int) -> None:
        for pid in self._all_pids():
            _signal_pid(pid, sig)

    def _next_wakeup(self, now: float) -> float:
        times = [s.respawn_at for s in self.slots if not s.pid and s.respawn_at is not None]
        if self._stopping:
            times.append(self._stop_deadline)
        if not times:
            return 1.0
        return max(0.0, min(min(times) - now, 1.0))

    def _sleep(self, timeout: float) -> None:
        if self._signal_queue:
            return
        try:
            select.select([self._wakeup_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self._wakeup_r, 4096):
                pass
        except BlockingIOError:
            pass


def respawn_delay(fast_failures: int) -> float:
    """Replace a dead worker at once, unless it keeps dying right after start.

    A crash loop must not spin the machine: from the second consecutive fast
    failure on, wait 0.2 s, 0.4 s, 0.8 s ... up to `MAX_BACKOFF`.
    """
    if fast_failures < 2:
        return 0.0
    return min(0.1 * 2 ** (fast_failures - 1), MAX_BACKOFF)


def prepare_state(config: Config) -> None:
    """Create state_dir (0700) and the events file before any worker needs them."""
    state_dir = config.gateway.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    events = config.events.file
    if events and events != "-":
        fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        os.close(fd)


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already exited; the reaper will see it


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by signal {sig} ({name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _version() -> str:
    from tlsgate import __version__

    return __version__
