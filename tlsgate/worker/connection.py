"""Serving one client connection: ClientHello, route, dial, PROXY header, relay, event.

Called by the worker's accept loop (tlsgate/worker/server.py) in a greenlet per
connection. The parsing, routing and event building it uses are pure modules;
this module only does the socket I/O and the bookkeeping between them.

States: ``hello`` (reading the ClientHello) -> ``dialing`` -> ``relaying`` ->
closed. Whatever ends the connection, exactly one event is emitted for it.
"""

from __future__ import annotations

import random
import socket as stdlib_socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent

from tlsgate.config.model import EndpointConfig, LimitsConfig
from tlsgate.events import ConnectionRecord
from tlsgate.proto import alerts
from tlsgate.proto.clienthello import ClientHello, ClientHelloError, parse_client_hello
from tlsgate.proto.ja4 import ja4_fingerprint
from tlsgate.proto.proxy_protocol import build_v1, build_v2
from tlsgate.proto.sni import normalise_sni
from tlsgate.routing import RouteTable
from tlsgate.worker.relay import Relay, RelayClosed
from tlsgate.worker.upstream import Dialer, DialError, TcpDialer

_RECV_SIZE = 16 * 1024


class ConnectionClosed(Exception):
    """Ends a connection before the relay; carries the close reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Routing:
    """What one worker generation needs to serve connections: routes, limits, dialers."""

    table: RouteTable
    limits: LimitsConfig
    on_unknown_sni: str
    dialers: dict[str, Dialer]
    """Dialer per endpoint name."""

    @classmethod
    def build(cls, endpoints: tuple[EndpointConfig, ...], limits: LimitsConfig, on_unknown_sni: str):
        dialers = {ep.name: TcpDialer(ep.upstream.address) for ep in endpoints}
        return cls(RouteTable.build(endpoints), limits, on_unknown_sni, dialers)


class Connection:
    """One client connection from accept to close."""

    __slots__ = ("client", "record", "state", "greenlet", "relay", "_routing", "_emit")

    def __init__(
        self,
        client: stdlib_socket.socket,
        record: ConnectionRecord,
        routing: Routing,
        emit: Callable[[ConnectionRecord], None],
    ):
        self.client = client
        self.record = record
        self.state = "hello"
        self.greenlet: gevent.Greenlet | None = None
        self.relay: Relay | None = None
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
                buffered, hello = self._read_client_hello()
                member = self._route(hello)
                self.state = "dialing"
                upstream, member = self._dial(member)
                self._send_preamble(upstream, member, buffered)
                self.state = "relaying"
                limits = self._routing.limits
                self.relay = Relay(
                    self.client,
                    upstream,
                    record,
                    limits.client_idle_timeout,
                    limits.server_idle_timeout,
                )
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

    # -- steps ---------------------------------------------------------------

    def _read_client_hello(self) -> tuple[bytearray, ClientHello]:
        limits = self._routing.limits
        buffered = bytearray()
        timer = gevent.Timeout.start_new(limits.client_hello_timeout, ConnectionClosed("client_hello_timeout"))
        try:
            while True:
                try:
                    data = self.client.recv(_RECV_SIZE)
                except OSError as e:
                    raise ConnectionClosed("client_reset") from e
                if not data:
                    raise ConnectionClosed("eof")
                buffered += data
                self.record.bytes_in += len(data)
                try:
                    hello = parse_client_hello(buffered, limits.max_handshake_message)
                except ClientHelloError as e:
                    self._fail(e.reason, e.alert)
                if hello is not None:
                    return buffered, hello
        finally:
            timer.close()

    def _route(self, hello: ClientHello) -> list[EndpointConfig]:
        record = self.record
        record.ja4_fingerprint = ja4_fingerprint(hello)
        sni = normalise_sni(hello.server_name)
        alert = alerts.UNRECOGNIZED_NAME if self._routing.on_unknown_sni == "alert" else None
        if sni is None:
            self._fail("no_sni", alert)
        record.server_name = sni
        route = self._routing.table.lookup(sni, record.server_port)
        if route is None:
            self._fail("unknown_sni", alert)
        record.endpoint_url = route.url
        record.endpoint_name = route.members[0].name
        return route.pick_order(random)

    def _dial(self, members: list[EndpointConfig]) -> tuple[stdlib_socket.socket, EndpointConfig]:
        """Connect to the first pool member that answers; the ClientHello is replayed, so retrying is safe."""
        timeout = self._routing.limits.upstream_connect_timeout
        failure: DialError | None = None
        for member in members:
            dialer = self._routing.dialers[member.name]
            self.record.endpoint_name = member.name
            self.record.upstream_addr = dialer.label
            try:
                return dialer.dial(timeout), member
            except DialError as e:
                failure = e
        assert failure is not None
        self.record.upstream_error = failure.detail
        raise ConnectionClosed(failure.reason)

    def _send_preamble(self, upstream, member: EndpointConfig, buffered: bytearray) -> None:
        version = member.upstream.proxy_protocol
        record = self.record
        header = b""
        if version:
            client = (record.client_ip, record.client_port)
            server = (record.server_ip, record.server_port)
            if version == 1:
                header = build_v1(client, server)
            else:
                # Passthrough: the negotiated protocol is unknown, so no ALPN TLV.
                header = build_v2(client, server, authority=record.server_name)
        try:
            upstream.sendall(header + buffered)
        except OSError as e:
            raise ConnectionClosed("upstream_reset") from e

    def _fail(self, reason: str, alert: int | None):
        if alert is not None:
            try:
                self.client.sendall(alerts.build_alert(alert))
            except OSError:
                pass  # the client is gone already; the event still records why we closed
        raise ConnectionClosed(reason)
