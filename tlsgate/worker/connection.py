"""Serving one client connection in a greenlet: policy, TLS, dial, PROXY, relay, event.

Connections start in tlsgate/worker/fastpath.py, which reads and routes the
ClientHello from event-loop callbacks; `Server` hands a connection over to this
module when the rest needs a greenlet: a traffic policy (rules, maybe the TLS
handshake of a terminate-tls), a dialer that must resolve a name, or an alert followed
by a graceful close. Parsing, routing, policy evaluation and event building are pure
modules; this module does the socket I/O and the bookkeeping between them.

States: ``policy`` -> ``dialing`` -> ``relaying`` -> ``closed``. The greenlet ends once
the relay starts: event-loop callbacks relay plain and TLS sides alike
(tlsgate/worker/relay.py). Whatever ends the connection, `Server` hears of it exactly
once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import gevent

from tlsgate.config.model import EndpointConfig, UpstreamConfig
from tlsgate.events import ConnectionRecord
from tlsgate.proto import alerts
from tlsgate.proto.clienthello import ClientHello
from tlsgate.tls.clientcert import describe_certificate
from tlsgate.tls.gsocket import TLSHandshakeError, TLSHandshakeTimeout
from tlsgate.worker.policyflow import PolicyFlow
from tlsgate.worker.relay import Relay
from tlsgate.worker.routing import ConnectionClosed, Routing, proxy_header
from tlsgate.worker.termination import TerminationError
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
        "hello_bytes",
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
        self.state = "policy"
        self.greenlet: gevent.Greenlet | None = None
        self.relay: Relay | None = None
        self.tls = None
        """The terminated client TLS connection (`GreenTLSConnection`), if any."""
        self.hello_bytes = b""
        """Everything the client sent before routing (its ClientHello records)."""
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
        self, buffered: bytearray, hello: ClientHello, members: list[EndpointConfig]
    ) -> None:
        """The greenlet's work, from a routed ClientHello (``buffered``: every byte read).
        It ends once the relay starts: event-loop callbacks carry the connection on."""
        upstream = None
        reason = "error"
        relaying = False
        try:
            upstream, upstream_tls = self._prepare(buffered, hello, members)
            del buffered, hello, members  # not held while a long relay runs
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

    def refuse(self, reason: str, alert: int) -> None:
        """Send ``alert``, close gracefully, report ``reason``."""
        try:
            self.fail(reason, alert)
        except ConnectionClosed as e:
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

    def _prepare(self, buffered: bytearray, hello: ClientHello, members: list[EndpointConfig]):
        """Everything before the relay; returns the upstream socket and, when the gateway
        re-encrypts, the TLS connection over it.

        Its own frame, so the ClientHello, its buffer and the policy flow are freed
        before a long-lived relay starts rather than held for the connection's life.
        """
        endpoint = members[0]
        if endpoint.traffic_policy is not None:
            self.state = "policy"
            self.hello_bytes = bytes(buffered)  # a terminate-tls handshake starts from it
            endpoint = PolicyFlow(self, hello, endpoint).run()
            self.hello_bytes = b""
            if endpoint is not members[0]:
                members = self._routing.pool_of(endpoint)
        self.state = "dialing"
        upstream, endpoint = self._dial(members, endpoint)
        try:
            return upstream, self._send_preamble(upstream, endpoint, buffered)
        except BaseException:
            upstream.close()
            raise

    # -- steps ---------------------------------------------------------------

    def terminate(self, decision, endpoint: EndpointConfig) -> None:
        """Complete the client's TLS handshake at the gateway (a terminate-tls decision)."""
        record = self.record
        record.termination = "gateway"
        tls_info = record.extra.setdefault("tls", {})
        base_dir = endpoint.policy_base_dir
        try:
            self.tls = self._routing.terminator.terminate(
                self.client, self.hello_bytes, decision, record.server_name, base_dir
            )
        except TerminationError as e:
            tls_info["error"] = str(e)
            self.fail("handshake_failed", e.alert)
        except TLSHandshakeError as e:
            tls_info["error"] = e.reason
            if e.alert is not None:
                tls_info["alert_sent"] = alerts.ALERT_NAMES.get(e.alert, str(e.alert))
            reason = (
                "handshake_timeout" if isinstance(e, TLSHandshakeTimeout) else "handshake_failed"
            )
            self._close_gracefully()
            raise ConnectionClosed(reason) from e
        tls = self.tls
        tls_info.update(
            {
                "version": tls.version,
                "cipher_suite": tls.cipher_suite,
                "negotiated_alpn": tls.alpn or "",
            }
        )
        peer = tls.peer_certificate()
        if peer is not None:
            tls_info["client_certificate"] = describe_certificate(peer)

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

    def _send_preamble(self, upstream, endpoint: EndpointConfig, buffered: bytearray):
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

    def fail(self, reason: str, alert: int | None):
        if alert is not None:
            try:
                self.client.sendall(alerts.build_alert(alert))
            except OSError:
                pass  # the client is gone already; the event still records why we closed
            self._close_gracefully()
        raise ConnectionClosed(reason)

    def _close_gracefully(self) -> None:
        """Half-close and drain briefly so our alert is not destroyed by an RST."""
        try:
            self.client.shutdown(socket.SHUT_WR)
            with gevent.Timeout(0.5, False):
                while self.client.recv(_RECV_SIZE):
                    pass
        except OSError:
            pass  # already reset by the peer: nothing left to protect
