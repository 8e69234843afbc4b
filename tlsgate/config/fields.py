"""Pure parsers for single config values: durations, sizes, addresses, endpoint URLs.

Each ``parse_*`` takes the raw value tomllib produced (any type) and returns the
typed value, or raises `FieldError` (a ValueError) whose text is the message that
ends up after ``FILE: key.path:``. The ``format_*`` functions are their inverses,
used by `tlsgate/config/dump.py`; ``parse_x(format_x(v)) == v`` holds for every
value a parser can return. Called by `reader.py`, `load.py` and `endpoints.py`.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import re
from decimal import Decimal

from tlsgate.config.model import HostPort


class FieldError(ValueError):
    """A config value is of the wrong type or out of range; the text is the message."""


# -- type checks ---------------------------------------------------------------------------


def describe(value: object) -> str:
    """TOML-flavoured description of a value for messages: ``integer 5``, ``a table``."""
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {json.dumps(shown)}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime.datetime):
        return f"datetime {value.isoformat()}"
    if isinstance(value, datetime.date):
        return f"date {value.isoformat()}"
    if isinstance(value, datetime.time):
        return f"time {value.isoformat()}"
    return type(value).__name__


def expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected a string, got {describe(value)}")
    return value


def expect_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"expected true or false, got {describe(value)}")
    return value


def expect_int(value: object, low: int, high: int) -> int:
    # bool is an int subclass in Python but a separate type in TOML.
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(f"expected an integer, got {describe(value)}")
    if not low <= value <= high:
        raise FieldError(f"must be between {low} and {high}, got {value}")
    return value


def expect_choice(value: object, choices: tuple[str, ...]) -> str:
    text = expect_str(value)
    if text not in choices:
        listed = " or ".join(json.dumps(c) for c in choices)
        raise FieldError(f"expected {listed}, got {describe(value)}")
    return text


# -- durations -----------------------------------------------------------------------------

_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
MAX_DURATION = 365 * 24 * 3600.0
"""Longer timeouts are almost certainly typos, and overflow some timer APIs."""


def parse_duration(value: object) -> float:
    """``"30s"``, ``"5m"``, ``"1m30s"``, ``"250ms"``, ``"1.5h"``, or a number of seconds.

    Returns seconds as a float; must be greater than zero and at most 365 days.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FieldError(
            f'expected a duration such as "30s" or "5m" (or a number of seconds), got {describe(value)}'
        )
    if isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        if not math.isfinite(value):
            raise FieldError(f"expected a finite number of seconds, got {describe(value)}")
        seconds = float(value)
    if seconds <= 0:
        raise FieldError(f"must be greater than zero, got {describe(value)}")
    if seconds > MAX_DURATION:
        raise FieldError(f"must be at most 8760h (365 days), got {describe(value)}")
    return seconds


def _parse_duration_text(text: str) -> float:
    compact = text.replace(" ", "")
    total = Decimal(0)
    position = 0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not compact or position != len(compact):
        hint = " (a unit is required)" if re.fullmatch(r"[\d.]+", compact) else ""
        raise FieldError(
            f'expected a duration such as "30s", "5m", "1m30s" or "250ms"{hint}, got {describe(text)}'
        )
    # Summing Decimals and converting once makes "1m30.1s" and 90.1 the same float.
    return float(total)


def format_duration(seconds: float) -> str:
    """The shortest unit string that parses back to exactly ``seconds``: ``"5m"``, ``"1.5s"``."""
    millis = round(seconds * 1000)
    if millis <= 0 or float(Decimal(millis) / 1000) != seconds:
        # Not a whole number of milliseconds: write the float's shortest exact decimal.
        return format(Decimal(repr(seconds)), "f") + "s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, frac = divmod(rest, 1000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if frac:
        parts.append(f"{whole}.{frac:03d}".rstrip("0") + "s")
    elif whole:
        parts.append(f"{whole}s")
    return "".join(parts)


# -- sizes ---------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "kib": 1024, "mb": 1024 * 1024, "mib": 1024 * 1024}
_SIZE_TEXT = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")


def parse_size(value: object, maximum: int | None = None) -> int:
    """Integer bytes, or ``"512B"``, ``"64KB"``, ``"1MB"`` (1024 multiples; KiB/MiB also read)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _SIZE_TEXT.fullmatch(value)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _SIZE_UNITS:
            raise FieldError(
                f'expected a size such as "64KB", "1MB" or "512B", got {describe(value)}'
            )
        size = int(match.group(1)) * _SIZE_UNITS[unit]
    else:
        raise FieldError(
            f'expected a size such as "64KB" or an integer number of bytes, got {describe(value)}'
        )
    if size <= 0:
        raise FieldError(f"must be greater than zero, got {describe(value)}")
    if maximum is not None and size > maximum:
        raise FieldError(f"must be at most {maximum} bytes, got {describe(value)}")
    return size


def format_size(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)}MB"
    if size % 1024 == 0:
        return f"{size // 1024}KB"
    return f"{size}B"


# -- host names ----------------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_-]{1,63}")


def normalise_host(text: str, *, allow_wildcard: bool) -> str:
    """Lower-case, strip one trailing dot, IDNA-encode, and check a DNS host name.

    With ``allow_wildcard``, ``*`` may be the whole leftmost label of a name with at
    least one more label (``*.example.com``, ``*.com``), matching ngrok's rule.
    """
    host = text.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise FieldError(
                f"{json.dumps(text)} is not a valid international host name ({e})"
            ) from e
    if not host:
        raise FieldError("the host name is empty")
    if len(host) > 253:
        raise FieldError(f"the host name is {len(host)} characters long; at most 253 are allowed")
    labels = host.split(".")
    for index, label in enumerate(labels):
        if "*" in label:
            if not allow_wildcard:
                raise FieldError(f"wildcards are not allowed here, got {json.dumps(text)}")
            if label != "*" or index != 0:
                raise FieldError(
                    f"'*' is allowed only as the whole leftmost label (*.example.com), got {json.dumps(text)}"
                )
            if len(labels) == 1:
                raise FieldError("a wildcard needs at least one label after it, e.g. *.example.com")
        elif not label:
            raise FieldError(f"{json.dumps(text)} has an empty label")
        elif not _LABEL.fullmatch(label):
            raise FieldError(
                f"label {json.dumps(label)} must be 1-63 letters, digits, '-' or '_', in {json.dumps(text)}"
            )
    return host


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise FieldError(f"the port must be a number, got {json.dumps(whole)}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise FieldError(f"the port must be between 1 and 65535, got {port}")
    return port


# -- listen addresses ----------------------------------------------------------------------

_BRACKETED = re.compile(r"\[([^\]]*)\]:(.*)")
_LISTEN_FORMS = '"HOST:PORT", "[IPV6]:PORT" or ":PORT"'


def parse_listen_address(value: object) -> HostPort:
    """``"127.0.0.1:8443"``, ``"[::1]:8443"``, or ``":8443"`` (= ``0.0.0.0:8443``, all IPv4).

    The host must be an IP address (or ``localhost``, read as 127.0.0.1): the master
    binds these itself and resolving names at bind time would make binds depend on DNS.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        raise FieldError(f'expected a string such as "127.0.0.1:{value}", got {describe(value)}')
    text = expect_str(value).strip()
    bracketed = _parse_bracketed(text)
    if bracketed is not None:
        return bracketed
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise FieldError(f"expected {_LISTEN_FORMS}, got {describe(value)}")
    if ":" in host:
        raise FieldError(
            f'write IPv6 addresses in brackets, e.g. "[::1]:8443", got {describe(value)}'
        )
    if host == "":
        host = "0.0.0.0"
    elif host.lower() == "localhost":
        host = "127.0.0.1"
    else:
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError as e:
            raise FieldError(
                f"the listen host must be an IP address or localhost, got {json.dumps(host)}"
            ) from e
    return HostPort(host, _parse_port(port_text, text))


# -- upstream addresses --------------------------------------------------------------------

TLS_UPSTREAM_MESSAGE = (
    "a tls:// upstream means re-encrypting after TLS is terminated at the gateway, but this "
    "endpoint's traffic policy has no terminate-tls action; in passthrough the client's own "
    "TLS already reaches the upstream end to end, so write the upstream as HOST:PORT"
)


def _parse_bracketed(text: str) -> HostPort | None:
    """``[V6]:PORT`` as a HostPort; None when ``text`` has no brackets."""
    bracketed = _BRACKETED.fullmatch(text)
    if not bracketed:
        return None
    host, port_text = bracketed.groups()
    try:
        host = str(ipaddress.IPv6Address(host))
    except ValueError as e:
        raise FieldError(f"{json.dumps(host)} in brackets is not an IPv6 address") from e
    return HostPort(host, _parse_port(port_text, text))


def parse_upstream_url(value: object) -> tuple[HostPort, bool]:
    """An upstream URL and whether it is ``tls://`` (re-encrypt after terminating at the gateway)."""
    if isinstance(value, str):
        scheme, sep, rest = value.strip().partition("://")
        if sep and scheme.lower() == "tls":
            return parse_upstream_address(rest.rstrip("/")), True
    return parse_upstream_address(value), False


def parse_upstream_address(value: object) -> HostPort:
    """``"HOST:PORT"``, ``"[V6]:PORT"``, ``"tcp://HOST:PORT"``, or a port (``9443``, ``"9443"``).

    A bare port means ``127.0.0.1:PORT``, as in ngrok's ``upstream.url``. The host may
    be a name; the worker resolves it when it connects.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return HostPort("127.0.0.1", _parse_port(str(value), str(value)))
    text = expect_str(value).strip()
    if text.isdigit():
        return HostPort("127.0.0.1", _parse_port(text, text))
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme == "tls":
            raise FieldError(TLS_UPSTREAM_MESSAGE)
        if scheme != "tcp":
            raise FieldError(
                f"unsupported upstream scheme {scheme}://; use HOST:PORT or tcp://HOST:PORT"
            )
        text = rest.rstrip("/")
    forms = '"HOST:PORT", "[IPV6]:PORT", "tcp://HOST:PORT" or a port number'
    bracketed = _parse_bracketed(text)
    if bracketed is not None:
        return bracketed
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise FieldError(f"expected {forms}, got {describe(value)}")
    if ":" in host:
        raise FieldError(
            f'write IPv6 addresses in brackets, e.g. "[::1]:9443", got {describe(value)}'
        )
    if not _is_ip(host):
        host = normalise_host(host, allow_wildcard=False)
    return HostPort(host, _parse_port(port_text, text))


# -- endpoint fields -----------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_endpoint_name(value: object) -> str:
    name = expect_str(value)
    if not _NAME.fullmatch(name):
        raise FieldError(
            f"an endpoint name must be 1-64 letters, digits, '_', '.' or '-', got {describe(value)}"
        )
    return name


def parse_endpoint_url(value: object) -> tuple[str, int | None]:
    """``"tls://HOST"`` or ``"tls://HOST:PORT"`` -> (normalised host pattern, port or None)."""
    text = expect_str(value).strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise FieldError(f'expected "tls://HOST" or "tls://HOST:PORT", got {describe(value)}')
    scheme = scheme.lower()
    if scheme != "tls":
        raise FieldError(
            f"tlsgate serves TLS endpoints, routed by SNI: write the URL as tls://HOST, not {scheme}://"
        )
    if not rest:
        raise FieldError("the URL needs a host after tls://")
    if any(c in rest for c in "/?#@"):
        raise FieldError(
            f"a TLS endpoint URL has no user, path or query part, got {describe(value)}"
        )
    if rest.startswith("["):
        raise FieldError("SNI carries host names, never IP addresses; use a host name")
    host, sep, port_text = rest.rpartition(":")
    port = _parse_port(port_text, text) if sep else None
    if not sep:
        host = rest
    host = normalise_host(host, allow_wildcard=True)
    if _is_ip(host):
        raise FieldError("SNI carries host names, never IP addresses; use a host name")
    return host, port


def format_endpoint_url(host: str, port: int | None) -> str:
    return f"tls://{host}" if port is None else f"tls://{host}:{port}"


def parse_proxy_protocol(value: object) -> int:
    """0 (off), 1 or 2; ngrok's strings ``""``, ``"1"``, ``"2"`` are read too."""
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2):
        return value
    if isinstance(value, str) and value.strip() in ("", "0", "1", "2"):
        return int(value.strip() or 0)
    raise FieldError(f'expected 0, 1 or 2 (or "", "1", "2"), got {describe(value)}')


def parse_user(value: object) -> str:
    """A user that exists on this machine, by name or uid (kept as written)."""
    import pwd

    return _existing_id(value, "user", pwd.getpwuid, pwd.getpwnam)


def parse_group(value: object) -> str:
    """A group that exists on this machine, by name or gid (kept as written)."""
    import grp

    return _existing_id(value, "group", grp.getgrgid, grp.getgrnam)


def _existing_id(value: object, kind: str, by_id, by_name) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else expect_str(value)
    try:
        by_id(int(text)) if text.isdigit() else by_name(text)
    except (KeyError, OverflowError) as e:
        raise FieldError(f"no {kind} {json.dumps(text)} on this machine") from e
    return text
