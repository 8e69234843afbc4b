"""Describe a peer certificate as plain data for events and policy variables.

The worker calls `describe_certificate` on the client certificate after a terminated
handshake; the result goes into the event as ``object.tls.client_certificate`` and into
the policy variables as ``conn.tls.client`` (ngrok's names: ``subject.common_name``,
``san.dns_names``, ``validity.not_before``...). Only JSON types: str, list, dict.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

_NAME_FIELDS = {
    "common_name": NameOID.COMMON_NAME,
    "country": NameOID.COUNTRY_NAME,
    "locality": NameOID.LOCALITY_NAME,
    "organization": NameOID.ORGANIZATION_NAME,
    "organizational_unit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "postal_code": NameOID.POSTAL_CODE,
    "province": NameOID.STATE_OR_PROVINCE_NAME,
    "street_address": NameOID.STREET_ADDRESS,
}


def describe_certificate(cert: x509.Certificate) -> dict:
    """Subject, issuer, serial, SANs, validity and signature algorithm of ``cert``.

    ``subject``/``issuer`` are maps: ``dn`` is the RFC 4514 string, the other keys are
    ngrok's field names (empty string when absent; several values are joined by ", ").
    ``serial_number`` is lower-case hex; times are RFC 3339 UTC.
    """
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    return {
        "subject": describe_name(cert.subject),
        "issuer": describe_name(cert.issuer),
        "serial_number": format(cert.serial_number, "x"),
        "san": _describe_san(cert),
        "not_before": _rfc3339(not_before),
        "not_after": _rfc3339(not_after),
        "validity": {"not_before": _rfc3339(not_before), "not_after": _rfc3339(not_after)},
        "signature_algorithm": _signature_algorithm(cert),
    }


def describe_name(name: x509.Name) -> dict[str, str]:
    described = {"dn": name.rfc4514_string()}
    for key, oid in _NAME_FIELDS.items():
        described[key] = ", ".join(str(a.value) for a in name.get_attributes_for_oid(oid))
    return described


def _describe_san(cert: x509.Certificate) -> dict[str, list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    return {
        "dns_names": list(san.get_values_for_type(x509.DNSName)),
        "email_addresses": list(san.get_values_for_type(x509.RFC822Name)),
        "ip_addresses": [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
        "uris": list(san.get_values_for_type(x509.UniformResourceIdentifier)),
    }


def _signature_algorithm(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    return getattr(oid, "_name", None) or oid.dotted_string


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
