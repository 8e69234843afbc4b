"""Load-time checks of TLS termination: terminate-tls actions, tls:// upstreams, certificates.

Called by `endpoints.py` (per endpoint) and `load.py` (``[tls]``, ``[[certificates]]``).
Certificates and keys given literally (PEM text or a path) in a terminate-tls action
are loaded once here, so that a wrong key or an out-of-order chain is a config error
and not a failed handshake in production; values built with ``${...}`` can only be
checked when a connection renders them.
"""

from __future__ import annotations

import os
from pathlib import Path

from tlsgate.config.reader import expand_user
from tlsgate.errors import Problems
from tlsgate.tls.certs import is_pem_text, load_ca_bundle, load_certificate_pair


def terminate_actions(policy) -> list:
    """The terminate-tls actions of a compiled policy, in rule order."""
    from tlsgate.policy.terminate import TerminateTlsAction

    if policy is None:
        return []
    return [a for rule in policy.rules for a in rule.actions if isinstance(a, TerminateTlsAction)]


def resolve_material(value: str, base_dir: Path) -> str:
    """PEM text stays as it is; a relative file path becomes absolute against ``base_dir``."""
    if is_pem_text(value):
        return value
    # An unknown ~user stays unexpanded: loading the file then reports it as unreadable.
    return str(Path(os.path.normpath(base_dir / (expand_user(value) or Path(value)))))


def check_terminate_actions(policy, base_dir: Path, problems: Problems) -> None:
    """Load the literal certificates, keys and CAs of every terminate-tls action."""
    for action in terminate_actions(policy):
        config_path = action.key_path  # already ends in ".config"
        cert, key = action.server_certificate, action.server_private_key
        if cert is not None and key is not None and cert.is_static and key.is_static:
            load_certificate_pair(
                resolve_material(cert.source, base_dir),
                resolve_material(key.source, base_dir),
                policy.source,
                config_path,
                problems,
                cert_field="server_certificate",
                key_field="server_private_key",
            )
        cas = action.mutual_tls_certificate_authorities
        if cas and all(t.is_static for t in cas):
            load_ca_bundle(
                [resolve_material(t.source, base_dir) for t in cas],
                policy.source,
                f"{config_path}.mutual_tls_certificate_authorities",
                problems,
            )


_MATERIAL_KEYS = ("server_certificate", "server_private_key", "mutual_tls_certificate_authorities")


def absolute_paths(value, base_dir):
    """Certificate and key paths in terminate-tls configs made absolute, so the dump means
    the same from any directory (PEM text and ``${...}`` values stay as they are)."""
    def fix(text):
        return text if not isinstance(text, str) or "${" in text else resolve_material(text, base_dir)

    if isinstance(value, dict):
        fixed = {}
        for k, v in value.items():
            if k in _MATERIAL_KEYS:
                fixed[k] = [fix(i) for i in v] if isinstance(v, list) else fix(v)
            else:
                fixed[k] = absolute_paths(v, base_dir)
        return fixed
    if isinstance(value, list):
        return [absolute_paths(v, base_dir) for v in value]
    return value
