"""Serving a connection from event-loop callbacks alone, as long as nothing needs a greenlet.

`Server` (tlsgate/worker/server.py) gives every accepted socket to a `FastConnection`.
It reads the ClientHello, routes it, runs the endpoint's traffic policy (completing the
client's TLS handshake when the policy terminates it), dials the upstream (with its own
TLS handshake when the gateway re-encrypts) and starts the relay, all from the event
loop's readiness and timer callbacks: no greenlet, no gevent socket object and no
Timeout per connection. docs/benchmarks.md measures what this saves per connection
(CPU, and memory while it sits idle).

Whatever must wait in the middle of Python code is handed over, with everything read and
decided so far, to the greenlet-based `Connection` (tlsgate/worker/connection.py): an
alert followed by a graceful close, a dialer that resolves a host name (or, later,
opens a tunnel).

States, as `tlsgate ctl conns` shows them: ``hello`` -> ``policy`` (traffic policy and
TLS termination: their steps are in tlsgate/worker/fasttls.py) -> ``dialing`` ->
``relaying`` -> ``closed``. Whatever ends the connection, `Server` hears of it exactly
once.
"""

from __future__ import annotations

import _socket
import logging
import time

from gevent import get_hub

from tlsgate.config.model import EndpointConfig
from tlsgate.events import ConnectionRecord
from tlsgate.proto.clienthello import (
    ClientHello,
    ClientHelloError,
    ClientHelloReader,
    hello_in_one_record,
)
from tlsgate.tls.gsocket import GreenTLSConnection
from tlsgate.worker.fasttls import GatewayTLSSteps
from tlsgate.worker.handshake import Handshake
from tlsgate.worker.policyflow import PolicyFlow, TerminateStep
from tlsgate.worker.relay import Relay
from tlsgate.worker.routing import RouteRefused, Routing, proxy_header
from tlsgate.worker.upstream import DialError

log = logging.getLogger(__name__)

_RECV_SIZE = 16 * 1024
_READ, _WRITE = 1, 2


class FastConnection(GatewayTLSSteps):
    """One client connection served by callbacks; see the module docstring."""

    __slots__ = (
        "client",
        "family",
        "record",
        "state",
        "relay",
        "dial_latency",
        "tls",
        "_routing",
        "_server",
        "_hello",
        "_buffered",
        "_watcher",
        "_timer",
        "_client_reader",
        "_candidates",
        "_member",
        "_dialer",
        "_upstream",
        "_dial_started",
        "_failure",
        "_members",
        "_steps",
        "_handshake",
        "_upstream_tls",
    )

    def __init__(
        self,
        client: _socket.socket,
        family: int,
        record: ConnectionRecord,
        routing: Routing,
        server,
    ):
        self.client = client
        self.family = family
        self.record = record
        self.state = "hello"
        self.relay: Relay | None = None
        self.dial_latency: float | None = None
        """Seconds from the first dial attempt to a connected upstream (the reporter's histogram)."""
        self._routing = routing
        self._server = server
        """`Server`: told when the connection ends (`finished`) or moves to a greenlet (`hand_over`)."""
        self._hello: ClientHelloReader | None = None
        self._buffered: bytes | bytearray | None = None
        self._watcher = None
        self._timer = None
        self._client_reader = None
        """The stopped read watcher that waited for the ClientHello, kept for the relay."""
        self._candidates: list[EndpointConfig] = []
        self._member: EndpointConfig | None = None
        self._dialer = None
        self._upstream: _socket.socket | None = None
        self._dial_started = 0.0
        self._failure: DialError | None = None
        self._members: list[EndpointConfig] = []
        """The routed pool (the traffic policy may forward elsewhere)."""
        self._steps = None
        """The traffic policy's flow (`PolicyFlow.steps`) while it runs."""
        self._handshake: Handshake | None = None
        self.tls: GreenTLSConnection | None = None
        """The client's TLS, once the gateway terminated it."""
        self._upstream_tls: GreenTLSConnection | None = None

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        """Read the ClientHello now if it is there (a client usually sends it with the
        TCP handshake), else wait for it."""
        self._guarded(self._read_hello)

    def close(self, reason: str) -> None:
        """End this connection from a greenlet (drain deadline, kill) or a callback."""
        if self.state == "closed":
            return
        if self.relay is not None:
            self.relay.stop(reason)
        else:
            self._end(reason)

    def _guarded(self, step, *args) -> None:
        # A bug in a step must not leave the connection open and unreported.
        try:
            step(*args)
        except Exception:
            log.exception("connection %s: %s failed", self.record.conn_id, self.state)
            self._end("error")

    # -- hello -------------------------------------------------------------------------

    def _read_hello(self) -> None:
        while True:
            try:
                data = self.client.recv(_RECV_SIZE)
            except BlockingIOError:
                if self._watcher is None:
                    self._wait_for_hello()
                return
            except OSError:
                self._end("client_reset")
                return
            if not data:
                self._end("eof")
                return
            self.record.bytes_in += len(data)
            limit = self._routing.limits.max_handshake_message
            reader = self._hello
            if reader is None:
                # Usually the whole hello is in the first read, in one record: no reader,
                # no buffer to copy it into.
                hello = hello_in_one_record(data, limit)
                if hello is not None:
                    self._hello_arrived()
                    self._route(hello, data)
                    return
                reader = self._hello = ClientHelloReader(limit)
            try:
                hello = reader.feed(data)
            except ClientHelloError as e:
                self._refuse(e.reason, e.alert)
                return
            if hello is not None:
                self._hello_arrived()
                self._route(hello, reader.buffer)
                return

    def _wait_for_hello(self) -> None:
        loop = get_hub().loop
        self._watcher = loop.io(self.client.fileno(), _READ)
        self._watcher.start(self._guarded, self._read_hello)
        self._timer = loop.timer(self._routing.limits.client_hello_timeout)
        self._timer.start(self._guarded, self._end, "client_hello_timeout")

    def _hello_arrived(self) -> None:
        """Stop waiting for the ClientHello. Its read watcher is stopped, not closed: the
        relay takes it over, which spares a new watcher and an epoll change."""
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._watcher is not None:
            self._watcher.stop()
            self._client_reader, self._watcher = self._watcher, None

    def _route(self, hello: ClientHello, buffered: bytes | bytearray) -> None:
        """``buffered``: everything read so far (replayed to the upstream or to OpenSSL)."""
        self._hello = None
        routing = self._routing
        try:
            members = routing.route(self.record, hello)
        except RouteRefused as e:
            self._refuse(e.reason, e.alert)
            return
        chosen = members[0]
        self._buffered = buffered
        if chosen.traffic_policy is None:
            self._dial(members, chosen)
            return
        self.state = "policy"
        self._members = members
        plain = routing.plain_terminations.get(chosen.name)
        if plain is not None:  # evaluating the policy would decide this and nothing else
            self._terminate(TerminateStep(plain, chosen))
            return
        self._steps = PolicyFlow(routing, self.record, hello, chosen).steps()
        self._advance(None)

    def _refuse(self, reason: str, alert: int | None) -> None:
        if alert is None:
            self._end(reason)
        else:
            # An alert wants a graceful close (half-close, drain): a greenlet's work.
            self._stop_waiting()
            self._server.hand_over_refusal(self, reason, alert)

    # -- dial --------------------------------------------------------------------------

    def _dial(self, members: list[EndpointConfig], chosen: EndpointConfig) -> None:
        routing = self._routing
        candidates = routing.failover_order(members, chosen)
        for member in candidates:
            if not getattr(routing.dialers[member.name], "connects_without_greenlet", False):
                self._stop_waiting()
                self._server.hand_over(self, self._buffered, members, chosen)
                return
        self._candidates = candidates
        self.state = "dialing"
        self._dial_started = time.monotonic()
        self._dial_next()

    def _dial_next(self) -> None:
        record = self.record
        while self._candidates:
            member = self._candidates.pop(0)
            dialer = self._routing.dialers[member.name]
            record.upstream_addr = dialer.label
            if "forwarded_to" not in record.extra:
                record.endpoint_name = member.name
            try:
                upstream = dialer.start_connect()
            except DialError as e:
                self._failure = e
                continue
            self._upstream, self._member, self._dialer = upstream, member, dialer
            # A local upstream has usually completed the TCP handshake by the time connect()
            # returns: try the PROXY header and the ClientHello at once. Only while it is
            # still connecting (EAGAIN) is there a write watcher and a timer to wait with.
            payload = self._preamble()
            try:
                sent = upstream.send(payload)
            except BlockingIOError:
                self._wait_for_connect()
                return
            except OSError as e:
                self._failure = dialer.connect_error(e.errno)
                upstream.close()
                self._upstream = None
                continue
            self._relay_from(payload, sent)
            return
        record.upstream_error = self._failure.detail
        self._end(self._failure.reason)

    def _wait_for_connect(self) -> None:
        loop = get_hub().loop
        self._watcher = loop.io(self._upstream.fileno(), _WRITE)
        self._watcher.start(self._guarded, self._connected)
        self._timer = loop.timer(self._routing.limits.upstream_connect_timeout)
        self._timer.start(self._guarded, self._dial_failed, None)

    def _connected(self) -> None:
        self._stop_watch()
        try:
            self._dialer.finish_connect(self._upstream)
        except DialError as e:
            self._dial_failed(e)
            return
        payload = self._preamble()
        try:
            sent = self._upstream.send(payload)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._end("upstream_reset")
            return
        self._relay_from(payload, sent)

    def _dial_failed(self, error: DialError | None) -> None:
        self._stop_watch()
        self._failure = error or self._dialer.timeout_error()
        self._upstream.close()
        self._upstream = None
        self._dial_next()

    # -- relay -------------------------------------------------------------------------

    def _preamble(self) -> bytes | bytearray:
        """What the upstream gets first: the PROXY header, if configured, then the
        ClientHello (passthrough). Maybe empty: sending nothing still says whether the
        connect succeeded."""
        proxy_protocol = self._member.upstream.proxy_protocol
        tls = self.tls
        if tls is not None:
            if not proxy_protocol:
                return b""
            # The negotiated ALPN is known only where the gateway terminated TLS.
            alpn = tls.alpn
            return proxy_header(proxy_protocol, self.record, alpn.encode() if alpn else None)
        if proxy_protocol:
            return proxy_header(proxy_protocol, self.record) + self._buffered
        return self._buffered

    def _relay_from(self, payload, sent: int) -> None:
        """Connected, and ``sent`` bytes of ``payload`` are out: relay, the rest first
        (after the upstream's TLS handshake when the gateway re-encrypts)."""
        self.dial_latency = time.monotonic() - self._dial_started
        rest = bytes(payload[sent:]) if sent < len(payload) else b""
        self._buffered = None
        if self.tls is None or not self._member.upstream.tls:
            self._start_relay(rest)
        else:
            self._reencrypt(rest)  # GatewayTLSSteps

    def _start_relay(self, rest: bytes) -> None:
        self.state = "relaying"
        limits = self._routing.limits
        self.relay = Relay(
            self.client,
            self._upstream,
            self.record,
            limits.client_idle_timeout,
            limits.server_idle_timeout,
            client_tls=self.tls,
            upstream_tls=self._upstream_tls,
            client_reader=self._client_reader,
        )
        self._client_reader = None  # the relay's now
        self.relay.start(self._end, rest)

    # -- end ---------------------------------------------------------------------------

    def _stop_waiting(self) -> None:
        """Stop everything the connection waits with, the read watcher kept for the relay
        included: for any way out but the relay."""
        if self._handshake is not None:
            self._handshake.cancel()
            self._handshake = None
        self._stop_watch()
        if self._client_reader is not None:
            self._client_reader.close()
            self._client_reader = None

    def _stop_watch(self) -> None:
        """Close the watcher and the timer of the current wait (a connect's, while dialing)."""
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _end(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._stop_waiting()
        if self._upstream is not None:
            self._upstream.close()
        self.client.close()
        record = self.record
        record.close_reason = reason
        record.end_ts = time.time()
        self._server.finished(record, self.dial_latency)
