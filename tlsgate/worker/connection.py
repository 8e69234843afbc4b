"""Serving one client connection: ClientHello, route, policy, TLS, dial, PROXY, relay, event.

Called by the worker's accept loop (tlsgate/worker/server.py) in a greenlet per
connection. Parsing, routing, policy evaluation and event building are pure modules;
this module does the socket I/O and the bookkeeping between them.

States: ``hello`` (reading the ClientHello) -> ``policy`` (rules, maybe the TLS
handshake of a terminate-tls) -> ``dialing`` -> ``relaying`` -> ``closed``. Whatever
ends the connection, exactly one event is emitted for it.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

import gevent

from tlsgate.config.model import EndpointConfig, UpstreamConfig
from tlsgate.events import ConnectionRecord
from tlsgate.proto import alerts
from tlsgate.proto.clienthello import ClientHello, ClientHelloError, ClientHelloReader
from tlsgate.proto.ja4 import ja4_fingerprint
from tlsgate.proto.proxy_protocol import build_v1, build_v2
from tlsgate.proto.sni import normalise_sni
from tlsgate.tls.clientcert import describe_certificate
from tlsgate.tls.gsocket import TLSHandshakeError, TLSHandshakeTimeout
from tlsgate.worker.policyflow import PolicyFlow
from tlsgate.worker.relay import PlainStream, Relay, RelayClosed
from tlsgate.worker.routing import ConnectionClosed, Routing
from tlsgate.worker.termination import TerminationError
from tlsgate.worker.upstream import DialError

_RECV_SIZE = 16 * 1024

__all__ = ["Connection", "ConnectionClosed", "Routing"]


class Connection:
    """One client connection from accept to close."""

    __slots__ = (
        "client",
        "record",
        "state",
        "greenlet",
        "relay",
        "tls",
        "hello_bytes",
        "_routing",
        "_emit",
    )

    def __init__(
        self,
        client,
        record: ConnectionRecord,
        routing: Routing,
        emit: Callable[[ConnectionRecord], None],
    ):
        self.client = client
        self.record = record
        self.state = "hello"
        self.greenlet: gevent.Greenlet | None = None
        self.relay: Relay | None = None
        self.tls = None
        """The terminated client TLS connection (`GreenTLSConnection`), if any."""
        self.hello_bytes = b""
        """Everything the client sent before routing (its ClientHello records)."""
        self._routing = routing
        self._emit = emit

    def close(self, reason: str) -> None:
        """End this connection from another greenlet (drain deadline, kill)."""
        if self.relay is not None:
            self.relay.stop(reason)
        elif self.greenlet is not None:
            self.greenlet.kill(ConnectionClosed(reason), block=False)

    def serve(self) -> None:
        record = self.record
        upstream = None
        try:
            try:
                upstream, upstream_side = self._prepare()
                self.state = "relaying"
                limits = self._routing.limits
                tls = self.tls
                self.relay = Relay(
                    tls if tls is not None else self.client,
                    upstream_side,
                    record,
                    limits.client_idle_timeout,
                    limits.server_idle_timeout,
                    tls_sides=tls is not None,
                )
                del upstream_side, tls
                record.close_reason = self.relay.run()
            except (ConnectionClosed, RelayClosed) as e:
                record.close_reason = e.reason
        finally:
            self.state = "closed"
            if upstream is not None:
                upstream.close()
            self.client.close()
            record.end_ts = time.time()
            self._emit(record)

    def _prepare(self):
        """Everything before the relay; returns (upstream socket, upstream side to relay to).

        Its own frame, so the ClientHello, its buffer and the policy flow are freed
        before a long-lived relay starts rather than held for the connection's life.
        """
        buffered, hello = self._read_client_hello()
        members = self._route(hello)
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

    def _read_client_hello(self) -> tuple[bytearray, ClientHello]:
        limits = self._routing.limits
        # Incremental: re-parsing the whole buffer after every read would be quadratic.
        reader = ClientHelloReader(limits.max_handshake_message)
        timer = gevent.Timeout.start_new(
            limits.client_hello_timeout, ConnectionClosed("client_hello_timeout")
        )
        try:
            while True:
                try:
                    data = self.client.recv(_RECV_SIZE)
                except OSError as e:
                    raise ConnectionClosed("client_reset") from e
                if not data:
                    raise ConnectionClosed("eof")
                self.record.bytes_in += len(data)
                try:
                    hello = reader.feed(data)
                except ClientHelloError as e:
                    self.fail(e.reason, e.alert)
                if hello is not None:
                    return reader.buffer, hello
        finally:
            timer.close()

    def _route(self, hello: ClientHello) -> list[EndpointConfig]:
        record = self.record
        record.ja4_fingerprint = ja4_fingerprint(hello)
        sni = normalise_sni(hello.server_name)
        alert = alerts.UNRECOGNIZED_NAME if self._routing.on_unknown_sni == "alert" else None
        if sni is None:
            self.fail("no_sni", alert)
        record.server_name = sni
        route = self._routing.table.lookup(sni, record.server_port)
        if route is None:
            self.fail("unknown_sni", alert)
        record.endpoint_url = route.url
        members = route.pick_order(random)
        record.endpoint_name = members[0].name
        return members

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
        candidates = [chosen] + [
            m for m in members if m is not chosen and self._routing.same_policy(m, chosen)
        ]
        failure: DialError | None = None
        for member in candidates:
            dialer = self._routing.dialers[member.name]
            self.record.upstream_addr = dialer.label
            if self.record.extra.get("forwarded_to") is None:
                self.record.endpoint_name = member.name
            try:
                return dialer.dial(timeout), member
            except DialError as e:
                failure = e
        assert failure is not None
        self.record.upstream_error = failure.detail
        raise ConnectionClosed(failure.reason)

    def _send_preamble(self, upstream, endpoint: EndpointConfig, buffered: bytearray):
        """PROXY header, then the client's ClientHello (passthrough) or upstream TLS."""
        config: UpstreamConfig = endpoint.upstream
        record = self.record
        header = b""
        if config.proxy_protocol:
            client = (record.client_ip, record.client_port)
            server = (record.server_ip, record.server_port)
            if config.proxy_protocol == 1:
                header = build_v1(client, server)
            else:
                # The negotiated ALPN is known only where the gateway terminated TLS.
                alpn = self.tls.alpn.encode() if self.tls is not None and self.tls.alpn else None
                header = build_v2(client, server, authority=record.server_name, alpn=alpn)
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
        if self.tls is None:
            return upstream
        if not config.tls:
            return PlainStream(upstream)
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
