"""Reading a TOML config file (or a dict) into one frozen, fully validated `Config`.

Callers: `tlsgate start`/`check`/`config show` (via `load_config`), the master on
SIGHUP (a `ConfigError` there keeps the old config), the CLI quick mode and the
endpoint API (via `parse_config` / `parse_endpoint` on dicts).

Every problem of a source is collected and reported at once, each as
``FILE: key.path: what is wrong``. Relative paths (``state_dir``,
``control_socket``, ``events.file``) are relative to the directory of the config
FILE, not to the working directory, so ``tlsgate start -c /etc/x/tlsgate.toml``
behaves the same from anywhere; the embedded default config and dicts use the
``base_dir`` they are given (the working directory for the default).

Each section has one small ``_parse_<section>`` function; a new section is a new
function plus an entry in `parse_config`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from tlsgate.config.endpoints import check_endpoints, parse_endpoint
from tlsgate.config.fields import (
    describe,
    expect_bool,
    expect_choice,
    expect_int,
    parse_duration,
    parse_group,
    parse_listen_address,
    parse_size,
    parse_user,
)
from tlsgate.config.forwards import check_forwards
from tlsgate.config.model import (
    MAX_WORKERS,
    CertificateConfig,
    Config,
    EndpointConfig,
    EventsConfig,
    GatewayConfig,
    HostPort,
    LimitsConfig,
    MetricsConfig,
    TlsConfig,
    default_workers,
)
from tlsgate.config.reader import Context, Table
from tlsgate.errors import ConfigError, Problem
from tlsgate.tls.certs import load_certificate_pair

__all__ = ["load_config", "parse_config", "parse_endpoint", "DEFAULT_SOURCE"]

DEFAULT_SOURCE = "<default>"
MAX_UNIX_SOCKET_PATH = 107
"""sun_path is 108 bytes on Linux, including the terminating NUL."""
MAX_HANDSHAKE_MESSAGE = 2**24 - 1
"""A TLS handshake message length is a 24-bit field."""


def load_config(path: str | os.PathLike[str] | None) -> tuple[Config, list[Problem]]:
    """Read and validate a config file; ``None`` loads the embedded default config.

    Returns the config and its warnings. Raises `ConfigError` carrying every problem
    (warnings included) when there is at least one error, including an unreadable
    file or a TOML syntax error.
    """
    if path is None:
        text = resources.files("tlsgate").joinpath("default.toml").read_text("utf-8")
        return _parse_text(text, DEFAULT_SOURCE, Path.cwd())
    source = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(
            [Problem(source, "<file>", f"cannot read the config file: {reason}")]
        ) from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        message = f"the file is not UTF-8 text (line {line}: {e.reason})"
        raise ConfigError([Problem(source, "<toml>", message)]) from e
    return _parse_text(text, source, Path(path).absolute().parent)


def _parse_text(text: str, source: str, base_dir: Path) -> tuple[Config, list[Problem]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError([Problem(source, "<toml>", str(e))]) from e
    return parse_config(data, source, base_dir)


def parse_config(
    data: dict[str, object], source: str, base_dir: str | os.PathLike[str]
) -> tuple[Config, list[Problem]]:
    """Validate a config given as a dict (as tomllib returns it); same contract as `load_config`."""
    ctx = Context(source, base_dir=Path(os.path.abspath(base_dir)))
    root = Table(data, "", ctx)

    gateway, listen_readable = _parse_gateway(root.section("gateway"))
    limits = _parse_limits(root.section("limits"))
    events = _parse_events(root.section("events"))
    metrics = _parse_metrics(root.section("metrics"))
    tls = _parse_tls(root.section("tls"))
    certificates = _parse_certificates(root)
    # With unreadable listen addresses, "no listener on port N" errors would only be noise.
    endpoints = _parse_endpoints(root, gateway.listen_ports if listen_readable else None)
    root.finish()

    if not endpoints and not ctx.problems.errors:
        root.warn("endpoints", "no endpoints are configured; every connection will be refused")
    ctx.problems.raise_if_errors()
    config = Config(
        gateway=gateway,
        limits=limits,
        events=events,
        metrics=metrics,
        tls=tls,
        certificates=certificates,
        endpoints=endpoints,
        source=source,
    )
    return config, ctx.problems.warnings


# -- sections --------------------------------------------------------------------------------


def _path_converter(ctx: Context) -> Callable[[object], Path]:
    return ctx.to_path


def _parse_gateway(table: Table) -> tuple[GatewayConfig, bool]:
    """The gateway section, and whether every listen address could be read."""
    defaults = GatewayConfig()
    errors_before = len(table.ctx.problems.errors)
    listen = table.array("listen", parse_listen_address, list(defaults.listen))
    listen_readable = len(table.ctx.problems.errors) == errors_before
    if table.has("listen") and isinstance(table.data["listen"], list) and not table.data["listen"]:
        table.error("listen", "at least one listen address is required")
    _check_listen_overlaps(table, listen)

    workers = table.get("workers", lambda v: expect_int(v, 1, MAX_WORKERS), default_workers())
    to_path = _path_converter(table.ctx)
    state_dir = table.get("state_dir", to_path, to_path(str(defaults.state_dir)))
    control_socket = table.get("control_socket", to_path, state_dir / "control.sock")
    length = len(os.fsencode(control_socket))
    if length > MAX_UNIX_SOCKET_PATH:
        derived = "" if table.has("control_socket") else " (derived from gateway.state_dir)"
        table.error(
            "control_socket",
            f"{control_socket}{derived} is {length} bytes long, but a unix socket path can be at "
            f"most {MAX_UNIX_SOCKET_PATH}; set gateway.control_socket to a shorter path",
        )
    on_unknown_sni = table.get(
        "on_unknown_sni", lambda v: expect_choice(v, ("alert", "close")), defaults.on_unknown_sni
    )
    drain_timeout = table.get("drain_timeout", parse_duration, defaults.drain_timeout)
    user = table.get("user", parse_user, None)
    group = table.get("group", parse_group, None)
    if group is not None and user is None:
        table.error("group", "group needs user: set gateway.user too (the workers' user)")
    table.finish()
    gateway = GatewayConfig(
        listen=tuple(listen),
        workers=workers,
        state_dir=state_dir,
        control_socket=control_socket,
        on_unknown_sni=on_unknown_sni,  # type: ignore[arg-type]
        drain_timeout=drain_timeout,
        user=user,
        group=group,
    )
    return gateway, listen_readable


def _check_listen_overlaps(table: Table, listen: list[HostPort]) -> None:
    """Duplicates, and a wildcard address sharing a port with a specific one of its family
    (``0.0.0.0:8443`` + ``127.0.0.1:8443``), which the master could never bind together."""
    seen: dict[HostPort, int] = {}
    for index, address in enumerate(listen):
        path = f"{table.key_path('listen')}[{index}]"
        if address in seen:
            message = f"{address} is already listed as gateway.listen[{seen[address]}]"
            table.ctx.problems.error(table.ctx.source, path, message)
            continue
        seen[address] = index
    families: dict[tuple[bool, int], list[HostPort]] = {}
    for address in dict.fromkeys(listen):
        families.setdefault((":" in address.host, address.port), []).append(address)
    for (is_v6, port), group in families.items():
        wildcard = "::" if is_v6 else "0.0.0.0"
        if len(group) > 1 and any(a.host == wildcard for a in group):
            others = ", ".join(str(a) for a in group if a.host != wildcard)
            table.error(
                "listen",
                f"{HostPort(wildcard, port)} already covers {others}; list only one of them",
            )


_LIMIT_PARSERS: dict[str, Callable[[object], float | int]] = {
    "client_hello_timeout": parse_duration,
    "handshake_timeout": parse_duration,
    "client_idle_timeout": parse_duration,
    "server_idle_timeout": parse_duration,
    "upstream_connect_timeout": parse_duration,
    "max_handshake_message": lambda v: parse_size(v, MAX_HANDSHAKE_MESSAGE),
    "max_certificate_message": lambda v: parse_size(v, MAX_HANDSHAKE_MESSAGE),
    "max_connections": lambda v: expect_int(v, 1, 10_000_000),
    "max_connections_per_ip": lambda v: expect_int(v, 0, 10_000_000),
}
"""One entry per `LimitsConfig` field; the defaults come from the dataclass."""


def _parse_limits(table: Table) -> LimitsConfig:
    defaults = LimitsConfig()
    values = {
        key: table.get(key, parse, getattr(defaults, key)) for key, parse in _LIMIT_PARSERS.items()
    }
    table.finish()
    return LimitsConfig(**values)  # type: ignore[arg-type]


def _parse_events(table: Table) -> EventsConfig:
    to_path = _path_converter(table.ctx)

    def convert(value: object) -> str:
        return "-" if value == "-" else str(to_path(value))

    file = table.get("file", convert, None)
    table.finish()
    return EventsConfig(file=file)


def _parse_tls(table: Table) -> TlsConfig:
    defaults = TlsConfig()
    auto = table.get(
        "auto_certificates",
        lambda v: expect_choice(v, ("local-ca", "off")),
        defaults.auto_certificates,
    )
    resumption = table.get("session_resumption", expect_bool, defaults.session_resumption)
    rotation = table.get("ticket_key_rotation", parse_duration, defaults.ticket_key_rotation)
    table.finish()
    return TlsConfig(
        auto_certificates=auto,  # type: ignore[arg-type]
        session_resumption=resumption,
        ticket_key_rotation=rotation,
    )


def _parse_certificates(root: Table) -> tuple[CertificateConfig, ...]:
    """``[[certificates]]``: the gateway's certificate store, matched on SAN DNS names."""
    raw = root.raw("certificates")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        root.error("certificates", f"expected an array of tables ([[certificates]]), got {describe(raw)}")
        return ()
    ctx = root.ctx
    to_path = _path_converter(ctx)
    entries = []
    for index, item in enumerate(raw):
        path = f"certificates[{index}]"
        if not isinstance(item, dict):
            ctx.problems.error(ctx.source, path, f"expected a table, got {describe(item)}")
            continue
        table = Table(item, path, ctx)
        cert = table.require("cert", to_path)
        key = table.require("key", to_path)
        table.finish()
        if cert is None or key is None:
            continue
        pair = load_certificate_pair(str(cert), str(key), ctx.source, path, ctx.problems)
        if pair is not None:
            entries.append(CertificateConfig(cert=cert, key=key, pair=pair))
    return tuple(entries)


def _parse_metrics(table: Table) -> MetricsConfig:
    listen = table.get("listen", parse_listen_address, None)
    table.finish()
    return MetricsConfig(listen=listen)


def _parse_endpoints(
    root: Table, listen_ports: frozenset[int] | None
) -> tuple[EndpointConfig, ...]:
    raw = root.raw("endpoints")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        root.error("endpoints", f"expected an array of tables ([[endpoints]]), got {describe(raw)}")
        return ()
    ctx = root.ctx
    parsed: list[tuple[str, EndpointConfig]] = []
    for index, item in enumerate(raw):
        path = f"endpoints[{index}]"
        endpoint = parse_endpoint(item, ctx.source, path, ctx.problems, listen_ports, ctx.base_dir)
        if endpoint is not None:
            parsed.append((path, endpoint))
    check_endpoints(parsed, ctx.source, ctx.problems)
    if not ctx.problems.errors:
        check_forwards([endpoint for _, endpoint in parsed], ctx.problems)
    return tuple(endpoint for _, endpoint in parsed)
