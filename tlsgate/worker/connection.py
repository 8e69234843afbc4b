"""Serving the rest of a client connection in a greenlet: dial, PROXY, relay, or a refusal.

Connections start in tlsgate/worker/fastpath.py, which reads and routes the
ClientHello, runs the traffic policy and terminates TLS from event-loop callbacks;
`Server` hands a connection over to this module when the rest needs a greenlet: a
dialer that must resolve a name (`serve_routed`, with the policy's decision and the
terminated TLS, if any), or an alert followed by a graceful close (`refuse`).

States: ``dialing`` -> ``relaying`` -> ``closed``. The greenlet ends once the relay
starts: event-loop callbacks relay plain and TLS sides alike (tlsgate/worker/relay.py).
Whatever ends the connection, `Server` hears of it exactly once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import gevent

from tlsgate.config.model import EndpointConfig, UpstreamConfig
from tlsgate.events import ConnectionRecord
from tlsgate.proto import alerts
from tlsgate.tls.gsocket import TLSHandshakeError
from tlsgate.worker.relay import Relay
from tlsgate.worker.routing import ConnectionClosed, Routing, proxy_header
from tlsgate.worker.upstream import DialError

_RECV_SIZE = 16 * 1024

__all__ = ["Connection", "ConnectionClosed", "Routing"]


class Connection:
    """One client connection, from its routed ClientHello to close."""

    __slots__ = (
        "client",
        "record",
        "state",
        "greenlet",
        "relay",
        "tls",
        "dial_latency",
        "_routing",
        "_finished",
    )

    def __init__(
        self,
        client,
        record: ConnectionRecord,
        routing: Routing,
        finished: Callable[[ConnectionRecord, float | None], None],
    ):
        self.client = client
        self.record = record
        self.state = "dialing"
        self.greenlet: gevent.Greenlet | None = None
        self.relay: Relay | None = None
        self.tls = None
        """The terminated client TLS connection (`GreenTLSConnection`), if any."""
        self.dial_latency: float | None = None
        """Seconds from the first dial attempt to a connected upstream (the reporter's histogram)."""
        self._routing = routing
        self._finished = finished

    def close(self, reason: str) -> None:
        """End this connection from another greenlet (drain deadline, kill)."""
        if self.state == "closed":
            return
        if self.relay is not None:
            self.relay.stop(reason)
        elif self.greenlet is not None:
            self.greenlet.kill(ConnectionClosed(reason), block=False)

    def serve_routed(
        self, buffered: bytes | bytearray | None, members: list[EndpointConfig], chosen: EndpointConfig
    ) -> None:
        """The greenlet's work: dial ``chosen`` (failing over within ``members``), send the
        preamble and start the relay. ``buffered``: every byte the client sent (its
        ClientHello, replayed in passthrough); None once the gateway terminated TLS. It
        ends once the relay starts: event-loop callbacks carry the connection on."""
        upstream = None
        reason = "error"
        relaying = False
        try:
            upstream, upstream_tls = self._prepare(buffered, members, chosen)
            del buffered, members, chosen  # not held while a long relay runs
            self.state = "relaying"
            limits = self._routing.limits
            self.relay = Relay(
                self.client,
                upstream,
                self.record,
                limits.client_idle_timeout,
                limits.server_idle_timeout,
                client_tls=self.tls,
                upstream_tls=upstream_tls,
            )
            relaying = True  # from here on the relay reports the end, maybe at once
            self.relay.start(lambda why: self._end(why, upstream))
        except ConnectionClosed as e:
            reason = e.reason
        finally:
            if not relaying:
                self._end(reason, upstream)

    def refuse(self, reason: str, alert: int | None, unsent: bytes = b"") -> None:
        """Send ``alert``, or ``unsent`` (what a failed handshake left for the client, maybe
        nothing), close gracefully, report ``reason``."""
        farewell = alerts.build_alert(alert) if alert is not None else unsent
        try:
            if farewell:
                try:
                    self.client.sendall(farewell)
                except OSError:
                    pass  # the client is gone already; the event still records why we closed
            self._close_gracefully()
        except ConnectionClosed as e:  # killed or shut down while draining
            reason = e.reason
        finally:
            self._end(reason, None)

    def _end(self, reason: str, upstream) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        if upstream is not None:
            upstream.close()
        self.client.close()
        record = self.record
        record.close_reason = reason
        record.end_ts = time.time()
        self._finished(record, self.dial_latency)

    def _prepare(self, buffered, members: list[EndpointConfig], chosen: EndpointConfig):
        """Everything before the relay; returns the upstream socket and, when the gateway
        re-encrypts, the TLS connection over it."""
        upstream, endpoint = self._dial(members, chosen)
        try:
            return upstream, self._send_preamble(upstream, endpoint, buffered)
        except BaseException:
            upstream.close()
            raise

    # -- steps ---------------------------------------------------------------

    def _dial(self, members: list[EndpointConfig], chosen: EndpointConfig):
        """Connect to the chosen endpoint's upstream, failing over to pool members with the
        same policy (the buffered ClientHello is replayed, so retrying is safe)."""
        timeout = self._routing.limits.upstream_connect_timeout
        failure: DialError | None = None
        started = time.monotonic()
        for member in self._routing.failover_order(members, chosen):
            dialer = self._routing.dialers[member.name]
            self.record.upstream_addr = dialer.label
            if self.record.extra.get("forwarded_to") is None:
                self.record.endpoint_name = member.name
            try:
                upstream = dialer.dial(timeout)
            except DialError as e:
                failure = e
                continue
            self.dial_latency = time.monotonic() - started
            return upstream, member
        assert failure is not None
        self.record.upstream_error = failure.detail
        raise ConnectionClosed(failure.reason)

    def _send_preamble(self, upstream, endpoint: EndpointConfig, buffered: bytes | bytearray):
        """PROXY header, then the client's ClientHello (passthrough) or the upstream TLS
        handshake (re-encryption: returns its `GreenTLSConnection`)."""
        config: UpstreamConfig = endpoint.upstream
        record = self.record
        header = b""
        if config.proxy_protocol:
            # The negotiated ALPN is known only where the gateway terminated TLS.
            alpn = self.tls.alpn.encode() if self.tls is not None and self.tls.alpn else None
            header = proxy_header(config.proxy_protocol, record, alpn)
        payload = header if self.tls is not None else header + buffered
        try:
            if payload:
                # A fresh connection's send buffer takes a ClientHello whole: send() first
                # spares sendall()'s SO_SNDBUF lookup, a syscall per connection.
                sent = upstream.send(payload)
                if sent < len(payload):
                    upstream.sendall(memoryview(payload)[sent:])
        except OSError as e:
            raise ConnectionClosed("upstream_reset") from e
        if self.tls is None or not config.tls:
            return None
        try:
            return self._routing.terminator.connect_upstream(upstream, config, None)
        except TLSHandshakeError as e:
            record.extra.setdefault("tls", {})["upstream_error"] = e.reason
            raise ConnectionClosed("upstream_tls_failed") from e

    def _close_gracefully(self) -> None:
        """Half-close and drain briefly so our alert is not destroyed by an RST."""
        try:
            self.client.shutdown(socket.SHUT_WR)
            with gevent.Timeout(0.5, False):
                while self.client.recv(_RECV_SIZE):
                    pass
        except OSError:
            pass  # already reset by the peer: nothing left to protect
