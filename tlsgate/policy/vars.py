"""The variables a traffic policy can read, and the builder of their map for one connection.

Owns the one description of every variable (`sample_vars`, with its real type) that
`expr.py` type-checks expressions against at load, and `build_conn_vars`, which the
worker calls once per connection (and again, with the TLS fields, after a
``terminate-tls``) to produce the map `engine.evaluate` reads.  Every variable is
always present with a value of its type (empty strings, zero, empty lists before the
data is known), so an expression that loads can never fail on a missing key at run
time; only ``vars.*`` (from ``set-vars``) varies.

Certificate names follow Go's ``pkix.Name`` as ngrok exposes them: ``common_name`` is a
string, the other attributes are lists of strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Roots an expression may name; everything else is an unknown variable.
ROOTS = ("conn", "endpoint", "time", "vars", "actions")

#: Roots of HTTP endpoints, named in the error so ngrok users know why.
HTTP_ONLY_ROOTS = ("req", "res")

_NAME_LIST_FIELDS = (
    "country",
    "locality",
    "organization",
    "organizational_unit",
    "postal_code",
    "province",
    "street_address",
)


def empty_name() -> dict[str, Any]:
    """An X.509 distinguished name with no attributes (``subject`` / ``issuer``)."""
    # A literal (keys in _NAME_LIST_FIELDS' order): four of these per connection.
    return {
        "common_name": "",
        "country": [],
        "locality": [],
        "organization": [],
        "organizational_unit": [],
        "postal_code": [],
        "province": [],
        "street_address": [],
    }


def empty_certificate() -> dict[str, Any]:
    """``conn.tls.client`` / ``conn.tls.server`` before any certificate is known."""
    return {
        "subject": empty_name(),
        "issuer": empty_name(),
        "serial_number": "",
        "signature_algorithm": "",
        "pem": "",
        "san": {"dns_names": [], "email_addresses": [], "ip_addresses": [], "uris": []},
        "validity": {"not_before": EPOCH, "not_after": EPOCH},
        "extensions": [],
    }


def empty_tls(sni: str = "", version: str = "") -> dict[str, Any]:
    """``conn.tls`` before termination: only what the ClientHello tells."""
    return {
        "sni": sni,
        "version": version,
        "cipher_suite": "",
        "negotiated_alpn": "",
        "ja4_fingerprint": "",
        "session_resumed": False,
        "client": empty_certificate(),
        "server": empty_certificate(),
    }


def empty_action_results() -> dict[str, Any]:
    """``actions.ngrok.*`` before any action ran; the engine fills it as actions run."""
    error = {"code": "", "message": ""}
    terminate = empty_tls()
    terminate.update({"error_code": "", "error_message": "", "warnings": []})
    return {
        "ngrok": {
            "restrict_ips": {"action": "", "matched_cidr": "", "error": dict(error)},
            "forward_internal": {"url": "", "error": dict(error)},
            "log": {"metadata": {}},
            "rate_limit": {"limited": False, "bucket_key": "", "error": dict(error)},
            "terminate_tls": terminate,
        }
    }


def build_endpoint_vars(
    *, id: str, name: str, url: str, host: str, port: int, protocol: str = "tls"
) -> dict[str, Any]:
    """``endpoint.*``: static per endpoint, so the worker builds it once at load.

    ``port`` is the URL's port, or the listener's port when the URL has none.
    """
    return {"id": id, "name": name, "url": url, "host": host, "port": port, "protocol": protocol}


def build_conn_vars(
    *,
    client_ip: str,
    client_port: int,
    server_ip: str,
    server_port: int,
    start: datetime,
    endpoint: dict[str, Any],
    sni: str = "",
    tls_version: str = "",
    ja4_fingerprint: str = "",
    tls: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The variable map of one connection, as `engine.evaluate` takes it.

    Before termination pass ``sni`` and ``tls_version`` (the highest version the
    ClientHello offers, ``"1.2"``/``"1.3"``). After a ``terminate-tls`` pass ``tls``:
    a full ``conn.tls`` map (start from `empty_tls` and fill the negotiated values),
    which is then also mirrored under ``actions.ngrok.terminate_tls`` by the engine.
    ``time.now`` is added by `evaluate` from its ``now`` argument.
    """
    if tls is None:
        tls = empty_tls(sni, tls_version)
        tls["ja4_fingerprint"] = ja4_fingerprint
    return {
        "conn": {
            "client_ip": client_ip,
            "client_port": client_port,
            "server_ip": server_ip,
            "server_port": server_port,
            "ts": {"start": start},
            "tls": tls,
        },
        "endpoint": endpoint,
    }


def sample_vars() -> dict[str, Any]:
    """A complete map with every variable at its real type, for load-time type checks."""
    endpoint = build_endpoint_vars(
        id="ep_sample",
        name="sample",
        url="tls://app.example.com:443",
        host="app.example.com",
        port=443,
    )
    conn_vars = build_conn_vars(
        client_ip="192.0.2.10",
        client_port=50000,
        server_ip="127.0.0.1",
        server_port=443,
        start=EPOCH,
        endpoint=endpoint,
        sni="app.example.com",
        tls_version="1.3",
    )
    # One element in every list, so that indexing and comprehensions get type-checked too.
    for cert in (conn_vars["conn"]["tls"]["client"], conn_vars["conn"]["tls"]["server"]):
        for name in (cert["subject"], cert["issuer"]):
            for key in _NAME_LIST_FIELDS:
                name[key] = ["sample"]
        for key in cert["san"]:
            cert["san"][key] = ["sample"]
        cert["extensions"] = [{"id": "2.5.29.17", "critical": False, "value": b""}]
    conn_vars["time"] = {"now": EPOCH}
    conn_vars["actions"] = empty_action_results()
    conn_vars["vars"] = {}
    return conn_vars


_NAME_OIDS = {
    "common_name": "2.5.4.3",
    "country": "2.5.4.6",
    "locality": "2.5.4.7",
    "organization": "2.5.4.10",
    "organizational_unit": "2.5.4.11",
    "postal_code": "2.5.4.17",
    "province": "2.5.4.8",
    "street_address": "2.5.4.9",
}


def certificate_vars(cert: Any) -> dict[str, Any]:
    """``conn.tls.client`` / ``conn.tls.server`` for a `cryptography` certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def name_vars(name: x509.Name) -> dict[str, Any]:
        values = {
            key: [str(a.value) for a in name if a.oid.dotted_string == oid]
            for key, oid in _NAME_OIDS.items()
        }
        described: dict[str, Any] = {"common_name": ", ".join(values.pop("common_name"))}
        described.update(values)
        return described

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    described = empty_certificate()
    oid = cert.signature_algorithm_oid
    described.update(
        {
            "subject": name_vars(cert.subject),
            "issuer": name_vars(cert.issuer),
            "serial_number": format(cert.serial_number, "x"),
            "signature_algorithm": getattr(oid, "_name", None) or oid.dotted_string,
            "pem": cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            "san": {
                "dns_names": list(san.get_values_for_type(x509.DNSName)),
                "email_addresses": list(san.get_values_for_type(x509.RFC822Name)),
                "ip_addresses": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
                "uris": list(san.get_values_for_type(x509.UniformResourceIdentifier)),
            },
            "validity": {
                "not_before": cert.not_valid_before_utc,
                "not_after": cert.not_valid_after_utc,
            },
        }
    )
    return described
