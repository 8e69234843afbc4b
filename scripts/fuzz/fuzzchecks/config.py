"""Fuzz target: the config loader on TOML text and on dicts, and dump -> parse round trips.

Every input is used twice:

1. as a config file's bytes, through the loader's text path (UTF-8 check, tomllib,
   `parse_config`), exactly as `load_config` reads a file;
2. as a `ByteSource` for a schema-guided config dict (see `documents.py`), given to
   `parse_config` as the CLI quick mode and the endpoint API do.

Either may only raise `ConfigError`, every problem of which names a source and a key
path. When a config loads, `dump_config` (what ``tlsgate config show`` prints) must
parse back to an equal config.

Relative paths resolve against a scratch directory holding a real certificate and
key (``cert.pem``, ``key.pem``) and a policy file (``policy.yml``), so that the
certificate and policy-file code is reached too.
"""

from __future__ import annotations

import atexit
import datetime
import shutil
import tempfile
import tomllib
from pathlib import Path

from tlsgate.config.dump import dump_config
from tlsgate.config.load import _parse_text, parse_config
from tlsgate.errors import ConfigError

from .bytesource import ByteSource
from .documents import config_document

SOURCE = "<fuzz>"
_POLICY = """\
on_tcp_connect:
  - expressions: ["conn.client_ip == '192.0.2.1'"]
    actions: [{type: deny}]
  - actions: [{type: log, config: {metadata: {who: "${conn.client_ip}"}}}]
"""


def check(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass  # load_config reports that itself, before any parsing
    else:
        _load(lambda: _parse_text(text, SOURCE, base_dir()))
    document = config_document(ByteSource(data))
    _load(lambda: parse_config(document, SOURCE, base_dir()))


def _load(parse) -> None:
    try:
        config, warnings = parse()
    except ConfigError as error:
        _check_problems(error.problems)
        assert error.problems, "ConfigError without problems"
        assert any(not p.warning for p in error.problems), "ConfigError with warnings only"
        return
    _check_problems(warnings)
    dumped = dump_config(config)
    again, _ = parse_config(tomllib.loads(dumped), config.source, base_dir())
    assert again == config, f"dump -> parse differs:\n{dumped}"


def _check_problems(problems) -> None:
    for problem in problems:
        assert problem.source, problem
        # A referenced policy file's own problems (unreadable, bad YAML) have no key
        # path: tlsgate.policy.load reports them at "" (see docs/reliability.md).
        assert problem.key_path or problem.source != SOURCE, (
            f"problem without a key path: {problem}"
        )
        assert problem.message, problem
        str(problem)


_base_dir: Path | None = None


def base_dir() -> Path:
    """The scratch directory, made once per process and removed when it exits (it holds
    a private key)."""
    global _base_dir
    if _base_dir is None:
        _base_dir = Path(tempfile.mkdtemp(prefix="tlsgate-fuzz-config-"))
        atexit.register(shutil.rmtree, _base_dir, True)
        cert, key = _self_signed("app.example.com")
        (_base_dir / "cert.pem").write_bytes(cert)
        (_base_dir / "key.pem").write_bytes(key)
        (_base_dir / "key.pem").chmod(0o600)
        (_base_dir / "policy.yml").write_text(_POLICY)
    return _base_dir


def _self_signed(name: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
