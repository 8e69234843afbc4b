"""The automatic local CA: creation, issuance, caching, file modes, renewal, races."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tests.unit.tls.harness import client_context, python_client, run_pair, terminating_server
from tlsgate.tls.contexts import create_server_context
from tlsgate.tls.localca import LEAF_LIFETIME, LocalCA

REPO = Path(__file__).resolve().parents[3]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_created_on_first_need_with_private_modes(tmp_path):
    ca = LocalCA(tmp_path / "state")
    assert not (tmp_path / "state" / "ca").exists()

    pem = ca.ca_cert_pem()

    directory = tmp_path / "state" / "ca"
    assert ca.ca_cert_path() == directory / "ca.crt"
    assert (directory / "ca.crt").read_bytes() == pem
    assert mode_of(directory) == 0o700
    assert mode_of(directory / "ca.key") == 0o600
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=3640)


def test_issued_leaf_is_trusted_by_a_real_client(tmp_path):
    ca = LocalCA(tmp_path)
    pair = ca.issue("Fresh.Localhost.Test")

    assert pair.dns_names == ("fresh.localhost.test",)
    assert pair.not_after - datetime.now(UTC) <= LEAF_LIFETIME
    leaf_file = tmp_path / "ca" / "leaves" / "fresh.localhost.test.pem"
    assert mode_of(leaf_file) == 0o600

    server, client = run_pair(
        terminating_server(create_server_context(pair)),
        python_client(client_context(ca.ca_cert_pem()), server_name="fresh.localhost.test"),
    )
    assert (server.error, client.error) == (None, None)
    assert client.value["answer"] == b"pong"


def test_leaf_cached_in_memory_and_on_disk(tmp_path):
    first = LocalCA(tmp_path)
    pair = first.issue("cached.test")
    assert first.issue("cached.test") is pair

    second = LocalCA(tmp_path)  # another worker, same state_dir
    assert second.issue("cached.test") == pair
    assert second.ca_cert_pem() == first.ca_cert_pem()


def test_leaf_reissued_within_last_third_of_its_life(tmp_path):
    clock = [datetime.now(UTC)]
    ca = LocalCA(tmp_path, now=lambda: clock[0])
    pair = ca.issue("renew.test")

    clock[0] += LEAF_LIFETIME / 2
    assert ca.issue("renew.test") is pair
    clock[0] += LEAF_LIFETIME / 4
    renewed = ca.issue("renew.test")

    assert renewed != pair and renewed.not_after > pair.not_after
    assert LocalCA(tmp_path, now=lambda: clock[0]).issue("renew.test") == renewed


@pytest.mark.parametrize("bad", ["", "bad name.test", "-" * 64 + ".test", "a..b"])
def test_refuses_names_that_are_not_host_names(tmp_path, bad):
    with pytest.raises(ValueError, match="not a host name"):
        LocalCA(tmp_path).issue(bad)


RACER = """
import hashlib, pathlib, sys, time
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
from tlsgate.tls.localca import LocalCA
ca = LocalCA(sys.argv[1])
pair = ca.issue("race.test")
print(hashlib.sha256(ca.ca_cert_pem()).hexdigest(), pair.leaf().serial_number)
"""


def test_racing_processes_create_one_ca_and_one_leaf(tmp_path):
    state, go = tmp_path / "state", tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(state), str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    go.touch()
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
        results.append(out.split())

    assert len({tuple(r) for r in results}) == 1, results
    assert results[0][0] == hashlib.sha256(LocalCA(state).ca_cert_pem()).hexdigest()
    assert sorted(p.name for p in (state / "ca").iterdir()) == [
        "ca.crt",
        "ca.key",
        "leaves",
        "lock",
    ]
    assert [p.name for p in (state / "ca" / "leaves").iterdir()] == ["race.test.pem"]
