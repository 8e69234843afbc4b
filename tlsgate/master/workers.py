"""Helpers the master uses around its worker processes, kept out of the arbiter's loop.

State preparation before the first fork, crash-loop backoff, exit-status wording,
signalling, and building TLS contexts before fork so workers share ticket keys.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from tlsgate.config.model import Config

log = logging.getLogger("tlsgate.master")

@dataclass
class WorkerSlot:
    """One worker place of a generation; the master respawns its worker when it dies."""

    index: int
    generation: int
    pid: int = 0
    started_at: float = 0.0
    fast_failures: int = 0
    respawn_at: float | None = None
    stop_deadline: float | None = None
    restarts: int = 0
    """Times this slot's worker died unexpectedly and was replaced."""


#: A worker that dies sooner than this after its start counts as failing at boot.
FAST_FAILURE_SECONDS = 2.0
MAX_BACKOFF = 30.0


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
    from tlsgate.worker.connlimits import TABLE_NAME, create_table

    # Fresh every start: counts of a previous run's connections mean nothing now.
    create_table(state_dir / TABLE_NAME)


def hand_over_state(config: Config, control_socket: Path | None) -> int | None:
    """With `[gateway] user`: give the workers' files to that user; returns its uid."""
    if config.gateway.user is None:
        return None
    from tlsgate.privileges import hand_over, resolve_ids

    uid, gid = resolve_ids(config.gateway.user, config.gateway.group)
    paths = [config.gateway.state_dir]
    events = config.events.file
    if events and events != "-":
        paths.append(Path(events))
    if control_socket is not None:
        paths += [control_socket.parent, control_socket]
    hand_over(paths, uid, gid)
    return uid


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already exited; the reaper will see it


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by signal {sig} ({name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def terminates_tls(config: Config) -> bool:
    from tlsgate.config.termination import terminate_actions

    return any(terminate_actions(ep.traffic_policy) for ep in config.endpoints)


def prewarm_tls(config: Config) -> None:
    """Build the terminating endpoints' TLS contexts before fork (see tlsgate/tls/prewarm.py).

    Only when some endpoint terminates TLS, so a passthrough-only master never loads
    pyOpenSSL. A failure here only costs shared tickets: workers build their own contexts.
    """
    if not terminates_tls(config):
        return
    from OpenSSL import SSL

    from tlsgate.tls.prewarm import prewarm_contexts

    try:
        count = prewarm_contexts(config)
    except (OSError, ValueError, SSL.Error) as e:
        log.warning("TLS contexts not prepared before fork (%s); each worker builds its own", e)
        return
    log.info("prepared %d TLS contexts shared by the workers", count)
