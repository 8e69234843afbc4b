"""The API endpoint store: atomic persistence and validation with the config loader's rules."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest

from tlsgate.config.load import parse_config
from tlsgate.control.endpoint_store import EndpointStore, merge_endpoints, merge_update
from tlsgate.errors import ConfigError


def _file_config(tmp_path, *endpoints):
    data = {
        "gateway": {"listen": ["127.0.0.1:8443"], "state_dir": str(tmp_path)},
        "endpoints": list(endpoints),
    }
    config, _ = parse_config(data, str(tmp_path / "tlsgate.toml"), tmp_path)
    return config


def _ep(name, host, upstream="127.0.0.1:9443", **extra):
    return {"name": name, "url": f"tls://{host}", "upstream": {"url": upstream}, **extra}


def test_save_and_load_round_trip_atomically_with_mode_0600(tmp_path):
    store = (
        EndpointStore.load(tmp_path).with_added(_ep("a", "a.test")).with_added(_ep("b", "b.test"))
    )
    store.save()
    path = tmp_path / "endpoints.toml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["endpoints.toml"]  # no temporary file left
    assert path.read_text().startswith("# Endpoints created through tlsgate's control API")
    loaded = EndpointStore.load(tmp_path)
    assert loaded.entries == store.entries
    updated = loaded.with_replaced("a", _ep("a", "a2.test")).without("b")
    assert updated.names() == ["a"] and updated.get("a")["url"] == "tls://a2.test"
    assert loaded.names() == ["a", "b"]  # stores are values


def test_missing_store_is_empty_and_broken_store_is_a_config_error(tmp_path):
    assert EndpointStore.load(tmp_path).entries == ()
    (tmp_path / "endpoints.toml").write_text("endpoints = [")
    with pytest.raises(ConfigError) as error:
        EndpointStore.load(tmp_path)
    assert error.value.problems[0].source == str(tmp_path / "endpoints.toml")
    (tmp_path / "endpoints.toml").write_text("other = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        EndpointStore.load(tmp_path)


def test_merge_appends_api_endpoints_after_the_files(tmp_path):
    config = _file_config(tmp_path, _ep("file", "file.test"))
    store = EndpointStore(tmp_path / "endpoints.toml", [_ep("api", "api.test")])
    merged, warnings = merge_endpoints(config, store)
    assert [e.name for e in merged.endpoints] == ["file", "api"]
    assert dataclasses.replace(merged, endpoints=config.endpoints) == config
    assert warnings == []


def test_merge_refuses_shadowing_duplicates_and_pool_conflicts(tmp_path):
    config = _file_config(tmp_path, _ep("file", "file.test"))
    store = EndpointStore(
        tmp_path / "endpoints.toml",
        [
            _ep("file", "x.test"),
            _ep("a", "a.test"),
            _ep("a", "b.test"),
            _ep("twin", "file.test"),
            {"name": "bad"},
        ],
    )
    with pytest.raises(ConfigError) as error:
        merge_endpoints(config, store)
    found = {(p.key_path, p.message.split(";")[0]) for p in error.value.problems}
    source = str(tmp_path / "endpoints.toml")
    assert all(p.source == source for p in error.value.problems)
    assert any(k == "endpoints[0].name" and "read-only through the API" in m for k, m in found)
    assert ("endpoints[2].name", "endpoint name 'a' is already used by endpoints[1]") in found
    twin = [m for k, m in found if k == "endpoints[3].url"]
    assert twin and "also the URL of endpoint 'file'" in twin[0] and "\0" not in twin[0]
    assert any(k.startswith("endpoints[4]") for k, _ in found)


def test_merge_update_merges_nested_tables():
    existing = _ep("a", "a.test", pooling_enabled=True)
    merged = merge_update(existing, {"upstream": {"proxy_protocol": 2}, "url": "tls://b.test"})
    assert merged == {
        "name": "a",
        "url": "tls://b.test",
        "upstream": {"url": "127.0.0.1:9443", "proxy_protocol": 2},
        "pooling_enabled": True,
    }
    assert existing["upstream"] == {"url": "127.0.0.1:9443"}
