"""The frozen config: what `tlsgate/config/load.py` produces and everything else reads.

One `Config` is built and validated once per (re)load, then handed to the master
and, through fork, to the workers. Nothing here is mutated at run time; runtime
counters live in the worker's registry, never on these objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OnUnknownSni = Literal["alert", "close"]
MAX_WORKERS = 256


def default_workers() -> int:
    """One worker per CPU, capped at `MAX_WORKERS`."""
    return min(os.cpu_count() or 1, MAX_WORKERS)


@dataclass(frozen=True, slots=True)
class HostPort:
    """A TCP address. ``host`` is an IP literal or a host name, without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: tuple[HostPort, ...] = (HostPort("127.0.0.1", 8443),)
    """Listening addresses; each is bound once by the master and shared by all workers."""
    workers: int = field(default_factory=default_workers)
    """Worker processes, 1..256; default one per CPU."""
    state_dir: Path = Path(".tlsgate")
    """The loader makes it absolute (relative to the config file's directory)."""
    control_socket: Path = Path(".tlsgate/control.sock")
    """Defaults to ``<state_dir>/control.sock``; absolute after loading, at most 107 bytes."""
    on_unknown_sni: OnUnknownSni = "alert"
    """``alert``: fatal unrecognized_name (112) then close; ``close``: close without an alert."""
    drain_timeout: float = 30.0
    user: str | None = None
    """Run workers as this user (name or uid); the master binds and prepares files as root first."""
    group: str | None = None
    """Workers' group (name or gid); default: the user's primary group."""
    """Seconds a graceful stop or a reload waits for open connections before closing them."""

    @property
    def listen_ports(self) -> frozenset[int]:
        return frozenset(address.port for address in self.listen)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """ngrok's limits for TLS endpoints are the defaults. Durations in seconds, sizes in bytes."""

    client_hello_timeout: float = 3.0
    handshake_timeout: float = 60.0
    client_idle_timeout: float = 300.0
    server_idle_timeout: float = 300.0
    upstream_connect_timeout: float = 10.0
    max_handshake_message: int = 64 * 1024
    max_certificate_message: int = 256 * 1024
    max_connections: int | None = None
    """Open client connections for the whole gateway; None = derived from the descriptor limit."""
    max_connections_per_ip: int = 0
    """Open client connections per client IP for the whole gateway; 0 = no limit."""


@dataclass(frozen=True, slots=True)
class EventsConfig:
    file: str | None = None
    """Absolute path of the JSON-lines events file; ``"-"`` means stdout; ``None`` writes no events."""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: HostPort | None = None
    """Where Prometheus text metrics are served at ``/metrics``; ``None`` = no metrics endpoint."""


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    address: HostPort
    """Where connections are forwarded; the host may be a name, resolved at connect time."""
    proxy_protocol: Literal[0, 1, 2] = 0
    """PROXY protocol header version sent before the client's bytes; 0 = none."""
    tls: bool = False
    """``tls://`` upstream: after terminating the client's TLS, open TLS to the upstream."""
    tls_verify: bool = True
    tls_verify_cas: Path | None = None
    """CA file the upstream's certificate must chain to; else ``SSL_CERT_FILE``, else the system store."""
    server_name: str | None = None
    """SNI sent upstream and name checked in its certificate; default: the upstream host
    (no SNI for an IP address, which is then checked against the certificate's IP SANs)."""

    @property
    def verify_name(self) -> str:
        return self.server_name or self.address.host


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    name: str
    url: str
    """Normalised URL as written back by `config show`: ``tls://host[:port]``."""
    host: str
    """Lower-case host pattern: ``app.example.com`` or ``*.example.com``."""
    port: int | None
    """Port in the URL; ``None`` = served on every listener."""
    upstream: UpstreamConfig
    description: str = ""
    metadata: str = ""
    bindings: tuple[str, ...] = ("public",)
    """Exactly one of ``public`` (routed by SNI) or ``internal`` (host ends in ``.internal``;
    reachable only through forward-internal, never by SNI)."""
    pooling_enabled: bool = False
    """Endpoints with the same ``url`` form a pool only if all of them set this."""
    traffic_policy_json: str | None = None
    """The inline ``traffic_policy`` document as canonical JSON (for `config show`)."""
    traffic_policy_file: Path | None = None
    traffic_policy: Any = field(default=None, compare=False, hash=False, repr=False)
    """The compiled `tlsgate.policy.model.Policy`, or ``None`` (plain passthrough)."""
    policy_base_dir: Path | None = field(default=None, compare=False, hash=False, repr=False)
    """Relative certificate paths in the policy are relative to this directory."""

    @property
    def is_wildcard(self) -> bool:
        return self.host.startswith("*.")

    @property
    def is_internal(self) -> bool:
        return self.bindings == ("internal",)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    auto_certificates: Literal["local-ca", "off"] = "local-ca"
    """Where a terminating endpoint's certificate comes from when neither its terminate-tls
    action nor ``[[certificates]]`` has one for the SNI: a local CA under state_dir, or none."""
    session_resumption: bool = True
    """TLS session tickets for terminated connections; ``false``: every connection is a
    full handshake."""
    ticket_key_rotation: float = 12 * 3600.0
    """Seconds between new session-ticket keys: the master starts a new generation of
    workers with fresh contexts (open connections finish on the old one)."""


@dataclass(frozen=True, slots=True)
class CertificateConfig:
    cert: Path
    key: Path
    pair: Any = field(default=None, compare=False, hash=False, repr=False)
    """The loaded `tlsgate.tls.certs.CertificatePair` (the key never appears in repr)."""


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    certificates: tuple[CertificateConfig, ...] = ()
    endpoints: tuple[EndpointConfig, ...] = ()
    source: str = "<default>"
    """Where this config came from: a file path, ``<default>`` or ``<cli>``."""
