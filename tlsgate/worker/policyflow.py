"""Carrying out an endpoint's traffic policy for one connection.

The pure engine (`tlsgate.policy.engine.evaluate`) decides; this module acts on what it
decides. It hands the connection to an internal endpoint on ``forward-internal`` (whose
own policy then runs) and closes it on ``deny``, ``close-connection``, a failed
``restrict-ips`` or ``rate-limit``. What the policy logged and decided goes into the
connection's event.

A ``terminate-tls`` needs a TLS handshake, which waits on the client. `PolicyFlow.steps`
is a generator, so the flow itself never waits: it yields a `TerminateStep` and is
resumed with the completed `GreenTLSConnection`, then evaluates again with the TLS
variables filled in. tlsgate/worker/fasttls.py drives it from event-loop callbacks, so
the handshake blocks nothing either.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from datetime import UTC, datetime
from functools import partial
from typing import NamedTuple

from tlsgate.config.forwards import MAX_FORWARD_DEPTH
from tlsgate.config.model import EndpointConfig
from tlsgate.events import ConnectionRecord
from tlsgate.policy.engine import evaluate
from tlsgate.policy.model import TerminateTls
from tlsgate.policy.vars import build_conn_vars, certificate_vars, empty_tls
from tlsgate.worker.routing import ConnectionClosed


class TerminateStep(NamedTuple):
    """What the flow waits for: the client's TLS, terminated with ``decision``'s settings."""

    decision: TerminateTls
    endpoint: EndpointConfig


class PolicyFlow:
    def __init__(self, routing, record: ConnectionRecord, hello, endpoint: EndpointConfig):
        self.hello = hello
        self.endpoint = endpoint
        self.routing = routing
        self.record = record
        self.tls = None
        """The client's terminated TLS (`GreenTLSConnection`), once a step completed it."""
        self.logs: list[dict] = []
        """Logs of the endpoints already left through forward-internal: the next
        endpoint's evaluation starts a list of its own, and the event keeps them all."""
        self.tls_vars: dict | None = None
        """``conn.tls`` after termination, built the first time a policy reads a variable."""

    def steps(self) -> Generator[TerminateStep, object, EndpointConfig]:
        """Evaluate until the connection goes to an upstream: returns the endpoint whose
        upstream to dial (the public one, or the internal one it was forwarded to).
        Yields a `TerminateStep` when the client's TLS must be terminated first; send
        the completed `GreenTLSConnection` back. Raises `ConnectionClosed` when the
        policy closes the connection."""
        endpoint = self.endpoint
        if endpoint.traffic_policy is None:
            return endpoint
        now = datetime.now(UTC)
        decision = self._evaluate(endpoint, now, None)
        hops = 0
        while True:
            self._note(decision)
            if decision.outcome == "continue":
                return endpoint
            if decision.outcome == "close":
                if decision.error:
                    self.record.extra["policy_error"] = decision.error
                raise ConnectionClosed(decision.close_reason or "policy_denied")
            if decision.outcome == "terminate_tls":
                if self.tls is None:
                    self.tls = yield TerminateStep(decision.terminate_tls, endpoint)
                decision = self._evaluate(endpoint, now, decision.resume)
                continue
            # forward-internal
            url = decision.forward.url
            route = self.routing.table.forward_target(url)
            if route is None or hops >= MAX_FORWARD_DEPTH:
                code = "ERR_NGROK_3200" if route is None else "forward_loop"
                message = (
                    f"no internal endpoint at {url}"
                    if route is None
                    else "too many forward-internal hops"
                )
                if decision.resume is None:  # on_error: halt
                    self.record.extra["forward_error"] = message
                    raise ConnectionClosed("forward_internal_failed")
                resume = decision.resume.with_forward_error(url, code, message)
                decision = self._evaluate(endpoint, now, resume)
                continue
            hops += 1
            self.logs.extend(decision.logs)
            endpoint = route.pick_order(random)[0]
            self.record.extra["forwarded_to"] = {"name": endpoint.name, "url": endpoint.url}
            if endpoint.traffic_policy is None:
                return endpoint
            decision = self._evaluate(endpoint, now, None)

    def _evaluate(self, endpoint: EndpointConfig, now, resume):
        # The variables as a function: most policies (a terminate-tls, an IP list) read
        # none, and building them (conn.tls with its certificate maps) costs more than
        # evaluating such a policy.
        return evaluate(
            endpoint.traffic_policy,
            partial(self._conn_vars, endpoint),
            now,
            self.routing.rate_limiter,
            resume=resume,
        )

    def _conn_vars(self, endpoint: EndpointConfig) -> dict:
        record = self.record
        if self.tls is not None and self.tls_vars is None:
            self.tls_vars = self._tls_vars()
        endpoint_vars = self.routing.endpoint_vars[endpoint.name]
        if endpoint.port is None:
            endpoint_vars = {**endpoint_vars, "port": record.server_port}
        return build_conn_vars(
            client_ip=record.client_ip,
            client_port=record.client_port,
            server_ip=record.server_ip,
            server_port=record.server_port,
            start=datetime.fromtimestamp(record.start_ts, UTC),
            endpoint=endpoint_vars,
            sni=record.server_name,
            tls_version=self.hello.highest_version,
            ja4_fingerprint=record.ja4_fingerprint,
            tls=self.tls_vars,
        )

    def _tls_vars(self) -> dict:
        tls = self.tls
        record = self.record
        tls_vars = empty_tls(record.server_name, tls.version or "")
        tls_vars["ja4_fingerprint"] = record.ja4_fingerprint
        tls_vars["cipher_suite"] = tls.cipher_suite or ""
        tls_vars["negotiated_alpn"] = tls.alpn or ""
        peer = tls.peer_certificate()
        if peer is not None:
            tls_vars["client"] = certificate_vars(peer)
        return tls_vars

    def _note(self, decision) -> None:
        """Record what the policy did so far in the event (logs, IP policy decision)."""
        extra = self.record.extra
        logs = self.logs + list(decision.logs)
        if logs:
            extra.setdefault("traffic_policy", {})["logs"] = logs
        if decision.ip_policy_decision:
            extra["ip_policy"] = {"decision": decision.ip_policy_decision}
