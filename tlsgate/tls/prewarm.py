"""Server contexts built in the master before it forks workers, so their ticket keys are shared.

OpenSSL draws a context's session-ticket keys when the context is created, and pyOpenSSL
cannot set them. A context created in the master before fork is inherited, keys included,
by every worker of that generation, so a ticket issued by one worker resumes on another.
`prewarm_contexts` fills `create_server_context`'s cache with every context the workers
can know in advance: the terminate-tls actions' own certificates, the ``[[certificates]]``
store and local-CA certificates for exact endpoint hosts. A new generation (a reload)
builds new contexts, so ticket keys rotate at every reload. Certificates only known per
connection (local-CA names under a wildcard, ``${...}`` values) get per-worker contexts.

Called by the master (gevent-free: this module imports only pyOpenSSL and cryptography).
"""

from __future__ import annotations

import logging

from tlsgate.config.model import Config
from tlsgate.config.termination import resolve_material, terminate_actions
from tlsgate.errors import Problems
from tlsgate.policy.model import TerminateTls
from tlsgate.tls.certs import CertificatePair, load_ca_bundle, load_certificate_pair
from tlsgate.tls.contexts import create_server_context
from tlsgate.tls.localca import LocalCA

log = logging.getLogger(__name__)


def prewarm_contexts(config: Config) -> int:
    """Create the contexts workers will use; returns how many. Never raises for one bad item."""
    # Fresh contexts every generation: their new ticket keys are the rotation.
    create_server_context.cache_clear()
    if not config.tls.session_resumption:
        return 0  # without tickets there are no keys to share
    local_ca = LocalCA(config.gateway.state_dir) if config.tls.auto_certificates == "local-ca" else None
    store_pairs = [c.pair for c in config.certificates if c.pair is not None]
    made = 0
    for endpoint in config.endpoints:
        base_dir = endpoint.policy_base_dir
        for action in terminate_actions(endpoint.traffic_policy):
            if not _static(action):
                continue
            decision = TerminateTls(
                min_version=action.min_version,
                max_version=action.max_version,
                mutual_tls_verification_strategy=action.mutual_tls_verification_strategy,
                alpn=tuple(t.source for t in action.alpn),
            )
            pairs = _pairs_for(action, endpoint.host, base_dir, store_pairs, local_ca)
            cas = None
            if action.mutual_tls_certificate_authorities:
                cas = load_ca_bundle(
                    [resolve_material(t.source, base_dir) for t in action.mutual_tls_certificate_authorities],
                    "prewarm",
                    "",
                    Problems(),
                )
                if cas is None:
                    continue
            for pair in pairs:
                server_context(pair, decision, cas, session_resumption=True)
                made += 1
    return made


def _static(action) -> bool:
    templates = [action.server_certificate, action.server_private_key, *action.mutual_tls_certificate_authorities, *action.alpn]
    return all(t is None or t.is_static for t in templates)


def server_context(pair: CertificatePair, decision: TerminateTls, cas, session_resumption: bool):
    """The one way contexts are asked for, so the master's and the workers' calls hit the
    same `create_server_context` cache entry (its key depends on the argument order)."""
    return create_server_context(
        pair,
        min_version=decision.min_version,
        max_version=decision.max_version,
        alpn=decision.alpn,
        client_cas=cas,
        verify_strategy=decision.mutual_tls_verification_strategy,  # type: ignore[arg-type]
        session_resumption=session_resumption,
    )


def _pairs_for(action, host, base_dir, store_pairs, local_ca) -> list[CertificatePair]:
    if action.server_certificate is not None and action.server_private_key is not None:
        pair = load_certificate_pair(
            resolve_material(action.server_certificate.source, base_dir),
            resolve_material(action.server_private_key.source, base_dir),
            "terminate-tls",
            "config",
            Problems(),
            cert_field="server_certificate",
            key_field="server_private_key",
        )
        return [pair] if pair is not None else []
    matching = [p for p in store_pairs if _covers(p, host)]
    if matching:
        return matching
    if local_ca is not None and not host.startswith("*."):
        try:
            return [local_ca.issue(host)]
        except OSError as e:
            log.warning("cannot issue a local-CA certificate for %s before fork: %s", host, e)
    return []


def _covers(pair: CertificatePair, host: str) -> bool:
    if host.startswith("*."):
        return f"*.{host[2:]}" in pair.dns_names
    return pair.matches(host)
