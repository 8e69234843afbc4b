"""TLS termination at the gateway, for one worker generation: certificates and handshakes.

The connection handler (tlsgate/worker/fastpath.py) calls
`Terminator.server_connection()` when the endpoint's traffic policy decides
``terminate-tls`` and `Terminator.upstream_connection()` to re-encrypt to a ``tls://``
upstream, then drives each handshake from event-loop callbacks
(tlsgate/worker/handshake.py); a greenlet re-encrypts with `connect_upstream()`. Certificate choice, by SNI, in this order: the action's own
``server_certificate``; the ``[[certificates]]`` store (exact SAN before wildcard); the
local CA when ``[tls] auto_certificates = "local-ca"``; otherwise the client gets the
``unrecognized_name`` alert. Contexts are built once per certificate and settings
(`tlsgate.tls.contexts` caches them), so a handshake costs OpenSSL's work only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from OpenSSL import SSL

from tlsgate.config.model import Config, UpstreamConfig
from tlsgate.config.termination import resolve_material
from tlsgate.errors import Problems
from tlsgate.events import ConnectionRecord
from tlsgate.policy.model import TerminateTls
from tlsgate.proto import alerts
from tlsgate.tls.certs import (
    CaBundle,
    CertificatePair,
    CertificateStore,
    load_ca_bundle,
    load_certificate_pair,
)
from tlsgate.tls.clientcert import describe_certificate
from tlsgate.tls.contexts import create_upstream_context, prepare_upstream_connection
from tlsgate.tls.gsocket import (
    GreenTLSConnection,
    TLSHandshakeError,
    TLSHandshakeTimeout,
    client_handshake,
)
from tlsgate.tls.localca import LocalCA
from tlsgate.tls.prewarm import server_context

log = logging.getLogger(__name__)


class TerminationError(Exception):
    """No certificate or settings to terminate with; ``alert`` is what the client gets."""

    def __init__(self, message: str, alert: int):
        super().__init__(message)
        self.alert = alert


class Terminator:
    def __init__(self, config: Config):
        self.session_resumption = config.tls.session_resumption
        self.store = CertificateStore.build(
            c.pair for c in config.certificates if c.pair is not None
        )
        self.local_ca = (
            LocalCA(config.gateway.state_dir)
            if config.tls.auto_certificates == "local-ca"
            else None
        )
        self.handshake_timeout = config.limits.handshake_timeout
        # Rendered terminate-tls settings (PEM or paths, maybe from ${...}) -> loaded material.
        self._pairs: dict[tuple[str, str, Path], CertificatePair] = {}
        self._cas: dict[tuple[tuple[str, ...], Path], CaBundle] = {}
        # A decision with its own certificate -> its context: the per-connection lookup is
        # one dict hit instead of the pair, CA and lru_cache key lookups.
        self._own_contexts: dict[tuple[TerminateTls, Path], SSL.Context] = {}

    def server_connection(
        self, client_sock, decision: TerminateTls, sni: str, base_dir: Path
    ) -> GreenTLSConnection:
        """The client's TLS before its handshake, with the certificate for ``sni``; raises
        TerminationError when there is none."""
        context = self._own_contexts.get((decision, base_dir))
        if context is None:
            context = self._context_for(decision, sni, base_dir)
        return GreenTLSConnection.server(client_sock, context)

    def _context_for(self, decision: TerminateTls, sni: str, base_dir: Path) -> SSL.Context:
        own = self._endpoint_pair(decision, base_dir)
        pair = own or self.store.find(sni)
        if pair is None and self.local_ca is not None:
            try:
                pair = self.local_ca.issue(sni)
            except OSError as e:
                log.error("local CA cannot issue a certificate for %s: %s", sni, e)
                raise TerminationError(f"local CA: {e.strerror or e}", alerts.INTERNAL_ERROR) from e
        if pair is None:
            raise TerminationError(f"no certificate for {sni}", alerts.UNRECOGNIZED_NAME)
        cas = self._ca_bundle(decision, base_dir)
        context = server_context(pair, decision, cas, self.session_resumption)
        if own is not None:
            if len(self._own_contexts) >= 1024:  # ${...}-rendered settings may vary
                self._own_contexts.clear()
            self._own_contexts[(decision, base_dir)] = context
        return context

    def connect_upstream(
        self, sock, upstream: UpstreamConfig, alpn: str | None
    ) -> GreenTLSConnection:
        """Re-encrypt: TLS to the upstream, verified unless ``tls_verify = false``."""
        return client_handshake(
            sock, self._upstream_context(upstream), upstream.verify_name, self.handshake_timeout
        )

    def upstream_connection(self, sock, upstream: UpstreamConfig) -> GreenTLSConnection:
        """TLS to the upstream before its handshake, for a caller that drives it itself."""
        return GreenTLSConnection(
            sock, prepare_upstream_connection(self._upstream_context(upstream), upstream.verify_name)
        )

    @staticmethod
    def _upstream_context(upstream: UpstreamConfig) -> SSL.Context:
        return create_upstream_context(
            upstream.tls_verify,
            str(upstream.tls_verify_cas) if upstream.tls_verify_cas else None,
        )

    def _endpoint_pair(self, decision: TerminateTls, base_dir: Path) -> CertificatePair | None:
        if decision.server_certificate is None or decision.server_private_key is None:
            return None
        key = (decision.server_certificate, decision.server_private_key, base_dir)
        pair = self._pairs.get(key)
        if pair is None:
            problems = Problems()
            pair = load_certificate_pair(
                resolve_material(decision.server_certificate, base_dir),
                resolve_material(decision.server_private_key, base_dir),
                "terminate-tls",
                "config",
                problems,
                cert_field="server_certificate",
                key_field="server_private_key",
            )
            if pair is None:
                raise TerminationError(
                    "; ".join(p.message for p in problems.errors), alerts.INTERNAL_ERROR
                )
            self._pairs[key] = pair
        return pair

    def _ca_bundle(self, decision: TerminateTls, base_dir: Path) -> CaBundle | None:
        items = decision.mutual_tls_certificate_authorities
        if not items:
            return None
        key = (items, base_dir)
        bundle = self._cas.get(key)
        if bundle is None:
            problems = Problems()
            bundle = load_ca_bundle(
                [resolve_material(i, base_dir) for i in items],
                "terminate-tls",
                "config.mutual_tls_certificate_authorities",
                problems,
            )
            if bundle is None:
                raise TerminationError(
                    "; ".join(p.message for p in problems.errors), alerts.INTERNAL_ERROR
                )
            self._cas[key] = bundle
        return bundle


def note_terminated(record: ConnectionRecord, tls: GreenTLSConnection) -> None:
    """What the event says of a completed termination."""
    tls_info = record.extra.setdefault("tls", {})
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


def note_failed(record: ConnectionRecord, error: TerminationError | TLSHandshakeError) -> str:
    """What the event says of a termination that failed; returns the close reason."""
    tls_info = record.extra.setdefault("tls", {})
    if isinstance(error, TerminationError):
        tls_info["error"] = str(error)
        return "handshake_failed"
    tls_info["error"] = error.reason
    if error.alert is not None:
        tls_info["alert_sent"] = alerts.ALERT_NAMES.get(error.alert, str(error.alert))
    return "handshake_timeout" if isinstance(error, TLSHandshakeTimeout) else "handshake_failed"


__all__ = [
    "Terminator",
    "TerminationError",
    "TLSHandshakeError",
    "note_failed",
    "note_terminated",
]
