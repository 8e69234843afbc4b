"""pyOpenSSL contexts: hardened server contexts per certificate, upstream contexts, SNI.

The worker calls `create_server_context` for the certificate it chose (cached, so one
context per certificate and settings; a reload that changes certificates gets new
pairs and so new contexts, while open connections keep theirs), `install_sni_selector`
when one front context must switch to the context for the ClientHello's SNI, and
`create_upstream_context` + `prepare_upstream_connection` to re-encrypt to an upstream.

What pyOpenSSL (26.x, on cryptography's bundled OpenSSL) can and cannot reach:

- ``SSL_CTX_set_max_cert_list`` is a macro over ``SSL_CTX_ctrl``, which neither
  pyOpenSSL nor cryptography's binding exposes, and the bundled OpenSSL is linked
  statically with hidden symbols, so ctypes cannot reach it either. The limit on a
  client's Certificate message is therefore OpenSSL's default,
  `EFFECTIVE_MAX_CERTIFICATE_MESSAGE` (100 KiB), not the configured 256 KiB; a larger
  chain fails cleanly with OpenSSL's ``excessive message size`` (alert illegal_parameter).
- Session-ticket keys cannot be set (``SSL_CTX_set_tlsext_ticket_keys`` is also a ctrl
  macro). OpenSSL draws random ticket keys when a context is created, so contexts
  built in the master before fork share keys across workers; contexts built in a
  worker resume only on that worker. Hence `ticket_keys` must be None.
- The servername callback of `Context.set_tlsext_servername_callback` cannot choose the
  alert (and prints a traceback to make OpenSSL fail), so `install_sni_selector`
  installs its own cffi callback through ``OpenSSL._util`` (pyOpenSSL's private
  binding), returning ``SSL_TLSEXT_ERR_ALERT_FATAL``: OpenSSL then sends the alert in
  ``*al``, which it pre-sets to unrecognized_name (112).
- Upstream host name checks use ``X509_VERIFY_PARAM_set1_host``/``set1_ip`` on the
  connection's verify parameters (also via ``OpenSSL._util``), so OpenSSL itself fails
  the handshake with "hostname mismatch" / "IP address mismatch".
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from weakref import WeakKeyDictionary

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from OpenSSL.crypto import X509

from tlsgate.tls.certs import CaBundle, CertificatePair

log = logging.getLogger(__name__)

VerifyStrategy = Literal["require-and-verify", "require-any", "request"]

EFFECTIVE_MAX_CERTIFICATE_MESSAGE = 100 * 1024
"""OpenSSL's SSL_MAX_CERT_LIST_DEFAULT: the real cap on a peer's Certificate message."""

TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
"""TLS 1.2 suites: ECDHE key exchange and AEAD only (forward secret; no CBC, RC4, 3DES)."""

IANA_CIPHER_NAMES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}
"""OpenSSL -> IANA names for the suites we offer (TLS 1.3 names are already IANA's)."""

_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_HARDENING = (
    SSL.OP_NO_COMPRESSION
    | SSL.OP_NO_RENEGOTIATION
    | SSL.OP_CIPHER_SERVER_PREFERENCE
    | SSL.OP_SINGLE_ECDH_USE
)
ALERT_UNRECOGNIZED_NAME = 112
ALERT_PROTOCOL_VERSION = 70
ALERT_INTERNAL_ERROR = 80


@dataclass(frozen=True)
class _ServerSettings:
    """What a context switch in the SNI callback must copy onto the connection."""

    min_version: int
    max_version: int
    verify_mode: int
    verify_callback: Callable[..., bool] | None


_settings: WeakKeyDictionary[SSL.Context, _ServerSettings] = WeakKeyDictionary()


def iana_cipher_name(openssl_name: str) -> str:
    return IANA_CIPHER_NAMES.get(openssl_name, openssl_name)


def _accept_any_certificate(conn: SSL.Connection, cert, errno: int, depth: int, ok: int) -> bool:
    """require-any and request: any presented certificate is accepted, trusted or not."""
    return True


@lru_cache(maxsize=1024)
def create_server_context(
    pair: CertificatePair,
    *,
    min_version: str = "1.2",
    max_version: str = "1.3",
    alpn: tuple[str, ...] = (),
    client_cas: CaBundle | None = None,
    verify_strategy: VerifyStrategy = "require-and-verify",
    session_resumption: bool = True,
    ticket_keys: bytes | None = None,
) -> SSL.Context:
    """A server context for ``pair`` with defaults testssl.sh passes.

    ``client_cas`` None means no client certificate is requested at all; otherwise the
    strategy decides as ngrok's: require-and-verify (must chain to a CA; missing ->
    certificate_required in 1.3 / handshake_failure in 1.2; untrusted -> unknown_ca),
    require-any (must present one, any accepted), request (asked for, never required).
    """
    if min_version not in _VERSIONS or max_version not in _VERSIONS:
        raise ValueError(f"TLS versions must be 1.2 or 1.3, not {min_version}/{max_version}")
    if _VERSIONS[min_version] > _VERSIONS[max_version]:
        raise ValueError(f"min_version {min_version} is above max_version {max_version}")
    if ticket_keys is not None:
        raise ValueError("pyOpenSSL cannot set session-ticket keys; see the module docstring")

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    # An idle connection gives its record buffers (~34 KiB) back to the allocator, as
    # nginx does: terminated connections sit idle far more than they move bytes.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_min_proto_version(_VERSIONS[min_version])
    ctx.set_max_proto_version(_VERSIONS[max_version])
    ctx.set_options(_HARDENING)
    ctx.set_cipher_list(":".join(TLS12_CIPHERS).encode())
    _load_pair(ctx, pair)

    if alpn:
        offered = tuple(p.encode() for p in alpn)
        ctx.set_alpn_select_callback(lambda conn, protos: _choose_alpn(offered, protos))

    verify_mode, verify_callback = SSL.VERIFY_NONE, None
    if client_cas is not None:
        verify_mode, verify_callback = _configure_client_auth(ctx, client_cas, verify_strategy)

    if session_resumption:
        # Resumed sessions must not cross certificates or trust settings.
        digest = hashlib.sha256(pair.chain_pem)
        digest.update(client_cas.pem if client_cas else b"")
        digest.update(verify_strategy.encode())
        ctx.set_session_id(digest.digest()[:32])
    else:
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)

    _settings[ctx] = _ServerSettings(
        _VERSIONS[min_version], _VERSIONS[max_version], verify_mode, verify_callback
    )
    return ctx


def _load_pair(ctx: SSL.Context, pair: CertificatePair) -> None:
    chain = x509.load_pem_x509_certificates(pair.chain_pem)
    ctx.use_certificate(chain[0])
    for intermediate in chain[1:]:
        ctx.add_extra_chain_cert(intermediate)
    ctx.use_privatekey(serialization.load_pem_private_key(pair.key_pem, None))
    ctx.check_privatekey()


def _choose_alpn(offered: tuple[bytes, ...], client_protos: list[bytes]) -> bytes | object:
    """Our preference order wins; no overlap continues without ALPN, as most servers do."""
    for proto in offered:
        if proto in client_protos:
            return proto
    return SSL.NO_OVERLAPPING_PROTOCOLS


def _configure_client_auth(
    ctx: SSL.Context, client_cas: CaBundle, strategy: VerifyStrategy
) -> tuple[int, Callable[..., bool] | None]:
    cas = x509.load_pem_x509_certificates(client_cas.pem)
    store = ctx.get_cert_store()
    assert store is not None  # a fresh context always has a store
    for ca in cas:
        store.add_cert(X509.from_cryptography(ca))
    # Advertised in CertificateRequest so clients holding several certs pick the right one.
    for ca in cas:
        ctx.add_client_ca(ca)
    if strategy == "require-and-verify":
        mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE
        callback = None  # OpenSSL's own verdict stands
    elif strategy == "require-any":
        mode = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE
        callback = _accept_any_certificate
    elif strategy == "request":
        mode = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
        callback = _accept_any_certificate
    else:
        raise ValueError(f"unknown mutual_tls_verification_strategy {strategy!r}")
    ctx.set_verify(mode, callback)
    return mode, callback


def install_sni_selector(
    front: SSL.Context, select_context: Callable[[str | None], SSL.Context | None]
) -> None:
    """Switch each connection on ``front`` to ``select_context(sni)`` during the handshake.

    None from the selector fails the handshake with alert unrecognized_name (112). The
    protocol version is chosen before this callback runs, so the front context's
    min/max decide it; a chosen context with a narrower range fails the handshake with
    protocol_version. Verification settings of the chosen context are copied onto the
    connection (OpenSSL keeps the SSL object's own copy from the front context).
    The callback is installed on ``front`` itself: build it with settings no other
    caller shares (contexts are cached). Simpler where the SNI is already known from the parsed ClientHello: create the
    Connection with ``select_context(sni)`` directly and skip this.
    """

    def servername_callback(ssl, alert, arg) -> int:
        try:
            conn = SSL.Connection._reverse_mapping[ssl]
            raw = conn.get_servername()
            chosen = select_context(raw.decode("ascii", "replace") if raw else None)
            if chosen is None:
                return _lib.SSL_TLSEXT_ERR_ALERT_FATAL  # *alert is unrecognized_name
            if chosen is not front:
                alert[0] = _switch_context(conn, chosen)
                if alert[0]:
                    return _lib.SSL_TLSEXT_ERR_ALERT_FATAL
            return _lib.SSL_TLSEXT_ERR_OK
        except Exception:  # an exception must not escape into OpenSSL's C stack
            log.exception("SNI selector failed")
            alert[0] = ALERT_INTERNAL_ERROR
            return _lib.SSL_TLSEXT_ERR_ALERT_FATAL

    callback = _ffi.callback("int (*)(SSL *, int *, void *)", servername_callback)
    front._tlsgate_servername_callback = callback  # keep the cffi callback alive
    _lib.SSL_CTX_set_tlsext_servername_callback(front._context, callback)


def _switch_context(conn: SSL.Connection, chosen: SSL.Context) -> int:
    """Move ``conn`` to ``chosen``; returns an alert number, or 0 when all is well."""
    settings = _settings.get(chosen)
    if settings is not None:
        negotiated = _VERSION_BY_NAME.get(conn.get_protocol_version_name())
        if negotiated is not None and not (
            settings.min_version <= negotiated <= settings.max_version
        ):
            return ALERT_PROTOCOL_VERSION
    conn.set_context(chosen)
    if settings is not None:
        conn.set_verify(settings.verify_mode, settings.verify_callback)
    return 0


_VERSION_BY_NAME = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}


@lru_cache(maxsize=64)
def create_upstream_context(
    verify: bool = True, cafile: str | None = None, alpn: tuple[str, ...] = ()
) -> SSL.Context:
    """Client context for re-encryption: trust ``cafile``, else $SSL_CERT_FILE, else system.

    The host name is checked per connection by `prepare_upstream_connection`.
    """
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)  # see create_server_context
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    if alpn:
        ctx.set_alpn_protos([p.encode() for p in alpn])
    if not verify:
        ctx.set_verify(SSL.VERIFY_NONE)
        return ctx
    ctx.set_verify(SSL.VERIFY_PEER)
    env_file = os.environ.get("SSL_CERT_FILE")
    if cafile:
        ctx.load_verify_locations(cafile)
    elif env_file:
        ctx.load_verify_locations(env_file)
    else:
        ctx.set_default_verify_paths()
    return ctx


def prepare_upstream_connection(ctx: SSL.Context, server_name: str) -> SSL.Connection:
    """A memory-BIO client Connection sending SNI ``server_name`` (unless an IP address).

    When ``ctx`` verifies, OpenSSL also checks ``server_name`` against the certificate:
    DNS names for a host name, IP SANs for an IP address.
    """
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    try:
        ip = ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        ip = None
    if ip is None:
        conn.set_tlsext_host_name(server_name.encode("idna"))
    if ctx.get_verify_mode() & SSL.VERIFY_PEER:
        param = _lib.SSL_get0_param(conn._ssl)
        if ip is None:
            name = server_name.encode("idna")
            ok = _lib.X509_VERIFY_PARAM_set1_host(param, name, len(name))
        else:
            ok = _lib.X509_VERIFY_PARAM_set1_ip(param, ip.packed, len(ip.packed))
        if ok != 1:
            raise ValueError(f"cannot check upstream certificates against {server_name!r}")
    return conn


def verify_error(conn: SSL.Connection) -> str | None:
    """OpenSSL's reason the peer certificate failed verification, if it did."""
    result = _lib.SSL_get_verify_result(conn._ssl)
    if result == 0:
        return None
    return _ffi.string(_lib.X509_verify_cert_error_string(result)).decode("ascii", "replace")
