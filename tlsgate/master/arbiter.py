"""The master process: binds, forks workers, supervises them, reloads and stops.

Single-threaded and gevent-free (gevent is imported only in a forked child).
Signal handlers only queue the signal; the loop wakes through the wakeup fd and
dispatches `handle_<name>()`, where all logging happens.

Generations: every (re)load forks a new generation of workers with the new
config; the previous generation gets SIGTERM and drains its open connections
while the new one already accepts on the same, never-closed, listening sockets.
SIGHUP and the control socket's ``reload`` (and endpoint API changes) all go
through `Arbiter.reload`, which returns the problems instead of raising.

The loop waits on one selector: the signal wakeup pipe plus everything of the
control plane (tlsgate/master/plane.py: control socket, worker channels,
metrics endpoint), whose callbacks run here, in the master's only thread.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from tlsgate import __version__
from tlsgate.config.model import Config, HostPort
from tlsgate.control.endpoint_store import EndpointStore, merge_endpoints
from tlsgate.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, ConfigError, Problem
from tlsgate.master import pidfile
from tlsgate.master.plane import ControlPlane
from tlsgate.master.sockets import BindError, create_listeners
from tlsgate.master.workers import (
    FAST_FAILURE_SECONDS,
    WorkerSlot,
    describe_status,
    hand_over_state,
    prepare_state,
    prewarm_tls,
    respawn_delay,
    signal_pid,
    terminates_tls,
)

log = logging.getLogger("tlsgate.master")

#: Extra time a stopping worker gets after its drain deadline before SIGKILL.
KILL_GRACE = 5.0

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)


@dataclass
class ReloadResult:
    problems: list[Problem]
    """The errors when refused; the warnings when applied."""
    generation: int | None
    """The new generation, or None when nothing changed."""

    @property
    def ok(self) -> bool:
        return self.generation is not None


class Arbiter:
    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None):
        self.config = config
        """What the workers serve: the file's config plus the API endpoints."""
        self.file_config = config
        """The config as loaded from the file (or CLI), without the API endpoints."""
        self.store: EndpointStore = EndpointStore(config.gateway.state_dir / "endpoints.toml")
        self.reload_config = reload_config
        self.started_at = time.time()
        self.worker_restarts = 0
        self.reloads = {"ok": 0, "failed": 0}
        self.plane: ControlPlane | None = None
        self.generation = 0
        self.listeners: dict[HostPort, socket.socket] = {}
        self.slots: list[WorkerSlot] = []
        """The current generation's slots, respawned when their worker dies."""
        self.retiring: dict[int, WorkerSlot] = {}
        """Workers of older generations that are draining, by pid."""
        self.pid = os.getpid()
        self._signal_queue: list[int] = []
        self._stopping: str | None = None
        self.selector = selectors.DefaultSelector()
        self._stop_deadline = 0.0
        self._generation_started = 0.0
        self._terminates = False

    # -- lifecycle --------------------------------------------------------------

    @property
    def stopping(self) -> str | None:
        """``"graceful"`` or ``"fast"`` once a stop has begun."""
        return self._stopping

    def run(self) -> int:
        try:
            self.store = EndpointStore.load(self.file_config.gateway.state_dir)
            self.config, warnings = merge_endpoints(self.file_config, self.store)
        except ConfigError as e:
            for problem in e.problems:
                log.error("%s", problem)
            return EXIT_CONFIG
        for problem in warnings:
            log.warning("%s", problem)
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
        self.plane = ControlPlane(self, self.selector)
        try:
            self.plane.open()
        except OSError as e:
            log.error("cannot open the control socket or the metrics endpoint: %s", e)
            self.plane.close()
            return EXIT_FAILURE
        pidfile.write(self.config.gateway.state_dir)
        workers_uid = hand_over_state(self.config, self.config.gateway.control_socket)
        if workers_uid is not None:
            # The workers' own user may use the control socket, as root may.
            self.plane.control.allowed_uids |= {workers_uid}
        try:
            log.info(
                "tlsgate %s listening on %s with %d workers (%d endpoints, config %s)",
                __version__,
                ", ".join(str(a) for a in self.listeners),
                self.config.gateway.workers,
                len(self.config.endpoints),
                self.config.source,
            )
            self._start_generation()
            self._loop()
        finally:
            pidfile.remove(self.config.gateway.state_dir)
            self.plane.close()
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
                self._rotate_ticket_keys_if_due(now)
            if self.plane is not None:
                self.plane.tick(now)
            self._sleep(self._next_wakeup(now))

    # -- signals ----------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, None)
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
        self.reload()

    def reload(self, store: EndpointStore | None = None, reread: bool = True) -> ReloadResult:
        """Validate and apply a new config; on any problem keep serving the old one.

        ``reread``: read the config file again (SIGHUP, ``reload``); the endpoint API
        passes ``reread=False`` and the candidate ``store``, which is saved only
        once the merged config is valid. Errors are logged and returned.
        """
        if self._stopping:
            return self._refuse([Problem("<gateway>", "reload", "the gateway is stopping")])
        file_config = self.file_config
        try:
            if reread and self.reload_config is not None:
                file_config = self.reload_config()
            if store is None:
                store = EndpointStore.load(file_config.gateway.state_dir)
            new_config, warnings = merge_endpoints(file_config, store)
        except ConfigError as e:
            return self._refuse(e.problems)
        try:
            listeners = create_listeners(new_config.gateway.listen, self.listeners)
        except BindError as e:
            return self._refuse([Problem(new_config.source, "gateway.listen", str(e))])
        if not reread:
            try:
                store.save()
            except (OSError, ValueError) as e:
                for address, sock in listeners.items():
                    if address not in self.listeners:
                        sock.close()
                return self._refuse([Problem(store.source, "<file>", f"cannot save the endpoint store: {e}")])
        for address, sock in self.listeners.items():
            if address not in listeners:
                sock.close()
        if (new_config.gateway.control_socket, new_config.metrics) != (
            self.config.gateway.control_socket,
            self.config.metrics,
        ):
            log.warning("control_socket and [metrics] changes take effect at the next start, not on reload")
        self.listeners = listeners
        self.config = new_config
        self.file_config = file_config
        self.store = store
        old = self.slots
        self._start_generation()
        now = time.monotonic()
        for slot in old:
            if slot.pid:
                slot.stop_deadline = now + new_config.gateway.drain_timeout + KILL_GRACE
                self.retiring[slot.pid] = slot
                signal_pid(slot.pid, signal.SIGTERM)
        self.reloads["ok"] += 1
        log.info(
            "reloaded %s: generation %d started, %d workers of the previous one draining",
            new_config.source,
            self.generation,
            sum(1 for s in old if s.pid),
            extra={"event_kind": "reloaded", "event_fields": {"generation": self.generation}},
        )
        return ReloadResult(warnings, self.generation)

    def _refuse(self, problems: list[Problem]) -> ReloadResult:
        self.reloads["failed"] += 1
        messages = [str(p) for p in problems]
        log.error(
            "reload failed; still serving the previous config:",
            extra={"event_kind": "reload_failed", "event_fields": {"problems": messages}},
        )
        for message in messages:
            log.error("  %s", message)
        return ReloadResult(problems, None)

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

    def _rotate_ticket_keys_if_due(self, now: float) -> None:
        tls = self.config.tls
        due = now - self._generation_started >= tls.ticket_key_rotation
        if not (due and tls.session_resumption and self._terminates):
            return
        log.info("rotating TLS session-ticket keys: starting a new generation of workers")
        self.reload(reread=False)

    def _start_generation(self) -> None:
        self._generation_started = time.monotonic()
        self._terminates = terminates_tls(self.config)
        self.generation += 1
        prewarm_tls(self.config)
        if self.config.gateway.user is not None:
            # What the master just made in state_dir (the local CA, its leaves) is the workers'.
            hand_over_state(self.config, None)
        self.slots = [WorkerSlot(i, self.generation) for i in range(self.config.gateway.workers)]
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.respawn_at = None
        slot.started_at = time.monotonic()
        config, listeners = self.config, list(self.listeners.values())
        master_end, worker_end = ControlPlane.create_channel()
        pid = os.fork()
        if pid:
            worker_end.close()
            slot.pid = pid
            if self.plane is not None:
                self.plane.attach_worker(pid, slot.generation, master_end)
            else:
                master_end.close()
            return
        code = EXIT_FAILURE
        try:
            signal.set_wakeup_fd(-1)
            for sig in _SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            master_end.close()
            if self.plane is not None:
                self.plane.close_in_child()
            self.selector.close()  # closes the epoll descriptor only; the master's registrations stay
            from tlsgate.worker.process import run_worker

            code = run_worker(config, listeners, slot.generation, self.pid, worker_end)
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
        how = describe_status(status)
        if self.plane is not None:
            self.plane.worker_exited(pid)
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
        slot.restarts += 1
        self.worker_restarts += 1
        slot.fast_failures = slot.fast_failures + 1 if lived < FAST_FAILURE_SECONDS else 0
        delay = respawn_delay(slot.fast_failures)
        slot.respawn_at = now + delay
        level = logging.ERROR if os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) else logging.WARNING
        hint = " Perhaps out of memory?" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL else ""
        log.log(
            level,
            "worker %d (generation %d, slot %d) %s after %.1fs; respawning in %.1fs.%s",
            pid, slot.generation, slot.index, how, lived, delay, hint,
            extra={"event_kind": "worker_exited", "event_fields": {"pid": pid, "slot": slot.index}},
        )

    def _respawn_due(self, now: float) -> None:
        for slot in self.slots:
            if not slot.pid and slot.respawn_at is not None and slot.respawn_at <= now:
                self._spawn(slot)
                log.info(
                    "worker %d started in slot %d (generation %d)", slot.pid, slot.index, slot.generation,
                    extra={"event_kind": "worker_started", "event_fields": {"pid": slot.pid, "slot": slot.index}},
                )

    def _kill_overdue_retirees(self, now: float) -> None:
        for pid, slot in self.retiring.items():
            if slot.stop_deadline is not None and now >= slot.stop_deadline:
                log.warning("worker %d (generation %d) is past its drain deadline; killing it", pid, slot.generation)
                signal_pid(pid, signal.SIGKILL)
                slot.stop_deadline = None

    def _all_pids(self) -> list[int]:
        return [s.pid for s in self.slots if s.pid] + list(self.retiring)

    def _kill_all(self, sig: int) -> None:
        for pid in self._all_pids():
            signal_pid(pid, sig)

    def _next_wakeup(self, now: float) -> float:
        times = [s.respawn_at for s in self.slots if not s.pid and s.respawn_at is not None]
        if self._stopping:
            times.append(self._stop_deadline)
        if self.plane is not None and (deadline := self.plane.next_deadline()) is not None:
            times.append(deadline)
        if not times:
            return 1.0
        return max(0.0, min(min(times) - now, 1.0))

    def _sleep(self, timeout: float) -> None:
        if self._signal_queue:
            return
        try:
            ready = self.selector.select(timeout)
        except InterruptedError:
            ready = []
        for key, mask in ready:
            if key.data is None:
                self._drain_wakeup()
                continue
            try:
                key.data(mask)
            except Exception:
                # A bug in the control plane must cost one request, never the master.
                log.exception("control plane error")

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 4096):
                pass
        except BlockingIOError:
            pass

