"""A worker process: entered right after fork, never returns.

Order matters (gevent's own advice): patch and reinitialise the hub first, then
import and start everything else. The inherited listening sockets stay plain,
non-blocking sockets: the server accepts from event-loop callbacks
(tlsgate/worker/server.py).

Signals (from the master): SIGTERM = drain (stop accepting, let open
connections finish up to `drain_timeout`, then close them with reason
`shutdown`); SIGINT/SIGQUIT = close everything now. The worker also exits when
its master disappears, so a killed master leaves no process holding the port.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket as stdlib_socket

log = logging.getLogger("tlsgate.worker")


def run_worker(
    config,
    listeners: list[stdlib_socket.socket],
    generation: int,
    master_pid: int,
    channel: stdlib_socket.socket | None = None,
) -> int:
    """Serve until told to stop; ``channel`` is this worker's end of the master's socketpair."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import gevent.event

    gevent.reinit()
    # Nothing here reads the spawn tree; tracking it costs every greenlet a captured
    # parent reference and a dict.
    gevent.config.track_greenlet_tree = False

    from gevent import socket

    from tlsgate.control.counters import ConnectionCounters
    from tlsgate.worker.eventsink import EventSink
    from tlsgate.worker.reporter import Reporter
    from tlsgate.worker.routing import build_routing
    from tlsgate.worker.server import Server

    routing = build_routing(config)
    sink = EventSink(config.events.file)
    # The listeners stay plain sockets: the server accepts from event-loop callbacks.
    server = Server(listeners, routing, sink, _connection_limits(config))
    if config.gateway.user is not None:
        from tlsgate.privileges import drop_privileges, resolve_ids

        # After every import and every file this worker opens at start (the interpreter
        # itself may live where the user cannot read), before the first connection.
        drop_privileges(*resolve_ids(config.gateway.user, config.gateway.group))
    reporter = None
    if channel is not None:
        green_channel = socket.socket(
            channel.family, channel.type, channel.proto, fileno=channel.detach()
        )
        counters = ConnectionCounters(alert_on_unknown_sni=config.gateway.on_unknown_sni == "alert")
        reporter = Reporter(green_channel, server, generation, counters)
    stopping = gevent.event.Event()
    fast = gevent.event.Event()

    def request_stop(how: str) -> None:
        if how == "fast":
            fast.set()
        stopping.set()

    gevent.signal_handler(signal.SIGTERM, request_stop, "graceful")
    gevent.signal_handler(signal.SIGINT, request_stop, "fast")
    gevent.signal_handler(signal.SIGQUIT, request_stop, "fast")
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def watch_master() -> None:
        while os.getppid() == master_pid:
            gevent.sleep(1.0)
        request_stop("fast")

    def channel_closed() -> None:
        # The channel closes the instant the master dies, a moment before the kernel
        # re-parents us: look closely for a little while instead of waiting for the 1 s poll.
        def look() -> None:
            for _ in range(100):
                if os.getppid() != master_pid:
                    request_stop("fast")
                    return
                gevent.sleep(0.01)

        gevent.spawn(look)

    gevent.spawn(watch_master)
    # Everything made so far (inherited from the master, imports, config, routing, TLS
    # contexts) lives as long as the worker: the collector need not walk it again on
    # every full collection, nor write to the pages it shares with the master.
    gc.collect()
    gc.freeze()
    if reporter is not None:
        reporter.on_channel_closed = channel_closed
    server.start()
    if reporter is not None:
        reporter.start()
    log.info("worker %d serving (generation %d)", os.getpid(), generation)
    stopping.wait()
    server.stop_accepting()
    if not fast.is_set():
        # Drain: wait for the open connections, unless the deadline or a fast stop comes first.
        gevent.wait([server.all_closed, fast], timeout=config.gateway.drain_timeout, count=1)
    server.close_all("shutdown")
    server.wait_closed(5.0)
    sink.flush()
    if reporter is not None:
        reporter.close()
    return 0


def _connection_limits(config):
    from tlsgate.worker.connlimits import TABLE_NAME, ConnectionLimits, default_max_connections

    limits = config.limits
    total = limits.max_connections or default_max_connections(config.gateway.workers)
    return ConnectionLimits(
        config.gateway.state_dir / TABLE_NAME, total, limits.max_connections_per_ip
    )
