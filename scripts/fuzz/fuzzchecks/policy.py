"""Fuzz target: the traffic-policy loader on YAML/JSON text and on schema-guided maps.

Every input is used twice:

1. as a policy file's text: decoded and read with ``yaml.safe_load`` (and
   ``json.loads`` when it looks like JSON), catching exactly what
   `load_policy_file` catches, then given to `parse_policy`;
2. as a `ByteSource` for a policy map built from ngrok's schema (`documents.py`).

`parse_policy` may not raise at all: everything wrong must be a recorded problem
with a key path, and it returns None exactly when it recorded an error. A policy
that loads is then evaluated once for a sample connection, which must give a
decision and not an exception.
"""

from __future__ import annotations

import datetime
import json

import yaml

from tlsgate.errors import Problems
from tlsgate.policy.engine import evaluate
from tlsgate.policy.load import parse_policy
from tlsgate.policy.vars import build_conn_vars, build_endpoint_vars

from .bytesource import ByteSource
from .documents import policy_document

SOURCE = "<fuzz>"
_NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def check(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            pass
        else:
            _check_document({} if doc is None else doc)
        if text.lstrip()[:1] in ("{", "["):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                pass
            else:
                _check_document(doc)
    _check_document(policy_document(ByteSource(data)))


def _check_document(doc: object) -> None:
    problems = Problems()
    policy = parse_policy(doc, SOURCE, "", problems)
    for problem in problems.items:
        assert problem.key_path and problem.message, problem
        str(problem)
    assert (policy is None) == bool(problems.errors), (policy, problems.items)
    if policy is not None:
        evaluate(policy, _conn_vars(), _NOW)


def _conn_vars() -> dict[str, object]:
    endpoint = build_endpoint_vars(
        id="ep_fuzz", name="fuzz", url="tls://app.example.com", host="app.example.com", port=443
    )
    return build_conn_vars(
        client_ip="192.0.2.1",
        client_port=50000,
        server_ip="127.0.0.1",
        server_port=443,
        start=_NOW,
        endpoint=endpoint,
        sni="app.example.com",
        tls_version="1.3",
        ja4_fingerprint="t13d1516h2_8daaf6152771_e5627efa2ab1",
    )
