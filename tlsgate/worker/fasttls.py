"""The ``policy`` state of a `FastConnection`: its traffic policy and the TLS it ends.

`FastConnection` (tlsgate/worker/fastpath.py) takes these steps from `GatewayTLSSteps`
when the routed endpoint has a traffic policy: the policy's flow runs until it decides
where the connection goes, completing the client's TLS handshake when an action
terminates it; and when the gateway re-encrypts to a ``tls://`` upstream, the upstream's
handshake runs before the relay starts. Both handshakes are driven by event-loop
callbacks (`Handshake`), like everything else on the fast path; a failed one is handed
to a greenlet, which sends the alert and closes gracefully.

A mixin, not an object of its own: it adds no object and no indirection per connection,
and the state it reads and writes is the connection's.
"""

from __future__ import annotations

from functools import partial

from gevent import get_hub

from tlsgate.tls.gsocket import GreenTLSConnection, TLSHandshakeError
from tlsgate.worker.handshake import Handshake
from tlsgate.worker.policyflow import TerminateStep
from tlsgate.worker.routing import ConnectionClosed
from tlsgate.worker.termination import TerminationError, note_failed, note_terminated


class GatewayTLSSteps:
    """`FastConnection`'s traffic-policy and TLS steps; see the module docstring."""

    __slots__ = ()

    # -- traffic policy ----------------------------------------------------------------

    def _advance(self, tls: GreenTLSConnection | None) -> None:
        """Run the policy flow on (resumed with ``tls`` after a termination)."""
        try:
            step = self._steps.send(tls)
        except StopIteration as done:
            self._steps = None
            endpoint = done.value
            members = self._members
            self._members = []
            if endpoint is not members[0]:  # forwarded to an internal endpoint
                members = self._routing.pool_of(endpoint)
            self._dial(members, endpoint)
            return
        except ConnectionClosed as e:
            self._steps = None
            self._end(e.reason)
            return
        self._terminate(step)

    # -- the client's handshake ----------------------------------------------------------

    def _terminate(self, step: TerminateStep) -> None:
        routing, record = self._routing, self.record
        record.termination = "gateway"  # also if it fails or is cut short
        self._stop_waiting()  # the handshake and the TLS relay watch the socket themselves
        try:
            tls = routing.terminator.server_connection(
                self.client, step.decision, record.server_name, step.endpoint.policy_base_dir
            )
        except TerminationError as e:
            note_failed(record, e)
            self._refuse("handshake_failed", e.alert)
            return
        self.tls = tls
        hello, self._buffered = self._buffered, None  # a terminated client's hello is not replayed
        self._handshake = Handshake(
            tls,
            get_hub().loop,
            routing.limits.handshake_timeout,
            partial(self._guarded, self._terminated),
            partial(self._guarded, self._handshake_failed),
        )
        self._handshake.start(hello)

    def _terminated(self) -> None:
        self._handshake = None
        note_terminated(self.record, self.tls)
        if self._steps is not None:
            self._advance(self.tls)
            return
        members, self._members = self._members, []
        self._dial(members, members[0])

    def _handshake_failed(self, error: TLSHandshakeError, unsent: bytes) -> None:
        self._handshake = None
        reason = note_failed(self.record, error)
        # Our alert (in ``unsent``, or sent already) wants a graceful close: a greenlet's work.
        self._stop_waiting()
        self._server.hand_over_refusal(self, reason, None, unsent)

    # -- the upstream's handshake (re-encryption) ------------------------------------------

    def _reencrypt(self, rest: bytes) -> None:
        """Connected to a ``tls://`` upstream: its handshake, then the relay (``rest``:
        the PROXY header's unsent part, sent ahead of the handshake)."""
        routing = self._routing
        self._upstream_tls = routing.terminator.upstream_connection(
            self._upstream, self._member.upstream
        )
        self._handshake = Handshake(
            self._upstream_tls,
            get_hub().loop,
            routing.limits.handshake_timeout,
            partial(self._guarded, self._upstream_ready),
            partial(self._guarded, self._upstream_failed),
        )
        self._handshake.start(prefix=rest)

    def _upstream_ready(self) -> None:
        self._handshake = None
        self._start_relay(b"")

    def _upstream_failed(self, error: TLSHandshakeError, unsent: bytes) -> None:
        self._handshake = None
        self.record.extra.setdefault("tls", {})["upstream_error"] = error.reason
        self._end("upstream_tls_failed")
