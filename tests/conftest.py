"""Shared fixtures: a test PKI, real TLS upstreams and real gateway processes."""

from __future__ import annotations

import pytest

from tests.support.certs import TestCA
from tests.support.gateway import Gateway
from tests.support.upstream import TlsUpstream


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    ca = TestCA(tmp_path_factory.mktemp("pki"))
    ca.server = ca.issue("server", ["app.example.test", "*.example.test", "example.test", "localhost"])
    return ca


@pytest.fixture
def upstreams(pki):
    started: list[TlsUpstream] = []

    def make(name: str, **kwargs) -> TlsUpstream:
        upstream = TlsUpstream(name, pki.server, **kwargs)
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.close()


@pytest.fixture
def gateway(tmp_path):
    started: list[Gateway] = []

    def make(config: dict, workers: int = 2, start: bool = True, env: dict | None = None) -> Gateway:
        gw = Gateway(tmp_path / f"gw{len(started)}", config, workers, env)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        gw.stop()
