"""`tlsgate policy test` and `tlsgate check` on traffic policies, as real subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
import yaml

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "policy"

POLICY = {
    "on_tcp_connect": [
        {
            "name": "outsiders",
            "expressions": ["!inCidrRanges(conn.client_ip, ['10.0.0.0/8', '2001:db8::/32'])"],
            "actions": [
                {
                    "type": "log",
                    "config": {"metadata": {"who": "${conn.client_ip}", "sni": "${conn.tls.sni}"}},
                },
                {"type": "deny"},
            ],
        },
        {
            "name": "tag",
            "expressions": ["conn.tls.sni.endsWith('.example.com')"],
            "actions": [{"type": "set-vars", "config": {"vars": [{"tier": "gold"}]}}],
        },
        {
            "name": "lab",
            "expressions": ["vars.tier == 'gold'"],
            "actions": [
                {"type": "restrict-ips", "config": {"enforce": False, "deny": ["10.9.0.0/16"]}}
            ],
        },
    ]
}


def tlsgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tlsgate", *args], capture_output=True, text=True, timeout=60
    )


def write_config(
    tmp_path: Path, policy_file: Path | None = None, inline: dict | None = None
) -> Path:
    app: dict = {"name": "app", "url": "tls://*.example.com", "upstream": {"url": "127.0.0.1:9443"}}
    if policy_file is not None:
        app["traffic_policy_file"] = str(policy_file)
    if inline is not None:
        app["traffic_policy"] = inline
    config = {
        "gateway": {"listen": ["127.0.0.1:8443"], "state_dir": str(tmp_path / "state")},
        "endpoints": [
            app,
            {
                "name": "bare",
                "url": "tls://bare.example.com",
                "upstream": {"url": "127.0.0.1:9444"},
            },
        ],
    }
    path = tmp_path / "tlsgate.toml"
    path.write_text(tomli_w.dumps(config))
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text(yaml.safe_dump(POLICY, sort_keys=False))
    return write_config(tmp_path, policy_file)


def policy_test(config: Path, *args: str) -> subprocess.CompletedProcess:
    return tlsgate("policy", "test", "-c", str(config), *args)


def test_denied_client_shows_the_matching_rule_its_log_and_the_outcome(config):
    result = policy_test(
        config, "--endpoint", "app", "--client-ip", "1.2.3.4", "--sni", "shop.example.com"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "endpoint app (tls://*.example.com), client 1.2.3.4, SNI shop.example.com"
    assert "matched rules: outsiders" in lines
    assert "outcome: closed (policy_denied)" in lines
    assert 'log: {"who": "1.2.3.4", "sni": "shop.example.com"}' in lines


def test_allowed_client_runs_the_later_rules(config):
    result = policy_test(
        config, "--endpoint", "app", "--client-ip", "10.9.1.2", "--sni", "shop.example.com"
    )
    assert result.returncode == 0, result.stderr
    assert "matched rules: tag, lab" in result.stdout
    assert re.search(
        r"restrict-ips: 10\.9\.1\.2 -> deny 10\.9\.0\.0/16 \(not enforced\)", result.stdout
    )
    assert "outcome: passed to the upstream 127.0.0.1:9443" in result.stdout
    # Another SNI: "tag" does not match, so neither does "lab" (vars.tier is unset).
    other = policy_test(
        config, "--endpoint", "app", "--client-ip", "10.9.1.2", "--sni", "shop.example.org"
    )
    assert "matched rules: none" in other.stdout


def test_json_output_parses_for_both_outcomes(config):
    denied = policy_test(
        config,
        "--endpoint",
        "app",
        "--client-ip",
        "2001:db9::1",
        "--sni",
        "a.example.com",
        "--json",
    )
    assert denied.returncode == 0, denied.stderr
    doc = json.loads(denied.stdout)
    assert doc["outcome"] == "close" and doc["close_reason"] == "policy_denied"
    assert doc["matched_rules"] == ["outsiders"]
    assert doc["logs"] == [{"who": "2001:db9::1", "sni": "a.example.com"}]
    allowed = policy_test(
        config,
        "--endpoint",
        "app",
        "--client-ip",
        "2001:db8::1",
        "--sni",
        "a.example.com",
        "--json",
    )
    doc = json.loads(allowed.stdout)
    assert doc["outcome"] == "continue" and doc["close_reason"] is None
    assert doc["vars"] == {"tier": "gold"}
    assert doc["ip_policy_decision"] == "allow"
    bare = json.loads(
        policy_test(config, "--endpoint", "bare", "--client-ip", "1.2.3.4", "--json").stdout
    )
    assert bare["outcome"] == "continue" and bare["matched_rules"] == []


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_json_and_toml_policy_files_decide_like_yaml(tmp_path, config, suffix):
    other_file = tmp_path / f"policy{suffix}"
    other_file.write_text(json.dumps(POLICY) if suffix == ".json" else tomli_w.dumps(POLICY))
    (tmp_path / "other").mkdir()
    other_config = write_config(tmp_path / "other", other_file)
    for ip in ("1.2.3.4", "10.9.0.1"):
        args = ("--endpoint", "app", "--client-ip", ip, "--sni", "x.example.com", "--json")
        assert json.loads(policy_test(other_config, *args).stdout) == json.loads(
            policy_test(config, *args).stdout
        )


def test_unknown_endpoint_and_bad_client_ip_exit_2(config):
    result = policy_test(config, "--endpoint", "nope", "--client-ip", "1.2.3.4")
    assert result.returncode == 2
    assert "no endpoint named 'nope' (endpoints: app, bare)" in result.stderr
    result = policy_test(config, "--endpoint", "app", "--client-ip", "1.2.3")
    assert result.returncode == 2
    assert "is not an IP address" in result.stderr


ERROR_LINE = re.compile(r"^(?P<file>[^:]+): (?P<key>[\w\[\].-]+): (?P<message>.+)$")


def problems(stderr: str) -> list[tuple[str, str, str]]:
    found = []
    for line in stderr.splitlines():
        match = ERROR_LINE.match(line)
        if match:
            found.append((match["file"], match["key"], match["message"]))
    return found


def test_check_lists_inline_policy_errors_under_the_config_file(tmp_path):
    inline = {
        "on_tcp_connect": [
            {"name": "r", "expressions": ["conn.client_ip + 1 == 2"], "actions": [{"type": "redirect"}]},
            {"actions": []},
            {"actions": [{"type": "deny"}, {"type": "log", "config": {"metadata": {"a": "b"}}}]},
            {"actions": [{"type": "close-connection", "config": {"status_code": 403}}]},
            {"expressions": ["unknown.x == 1", "conn.client_port"],
             "actions": [{"type": "restrict-ips", "config": {"allow": ["300.0.0.0/8"]}}]},
        ]
    }  # fmt: skip
    path = write_config(tmp_path, inline=inline)
    result = tlsgate("check", "-c", str(path))
    assert result.returncode == 2
    found = problems(result.stderr)
    assert {f for f, _, _ in found} == {str(path)}
    keys = {k: m for _, k, m in found}
    base = "endpoints[0].traffic_policy.on_tcp_connect"
    assert (
        "type error" in keys[f"{base}[0].expressions[0]"]
        and "rule 'r'" in keys[f"{base}[0].expressions[0]"]
    )
    assert "only available on HTTP endpoints" in keys[f"{base}[0].actions[0].type"]
    assert "at least one action" in keys[f"{base}[1].actions"]
    assert "unreachable" in keys[f"{base}[2].actions[1]"]
    assert "takes no config on TLS endpoints" in keys[f"{base}[3].actions[0].config.status_code"]
    assert "unknown variable 'unknown'" in keys[f"{base}[4].expressions[0]"]
    assert "boolean" in keys[f"{base}[4].expressions[1]"]
    assert "not an IPv4 or IPv6 CIDR" in keys[f"{base}[4].actions[0].config.allow[0]"]
    assert len(found) == 8
    assert "8 config errors" in result.stderr


@pytest.mark.parametrize(
    ("name", "key", "message"),
    [
        (
            "bad-actions.yml",
            "on_tcp_connect[0].actions[1].type",
            "only available on HTTP endpoints",
        ),
        ("bad-syntax.json", "", ""),
    ],
)
def test_check_names_the_policy_file_for_errors_inside_it(tmp_path, name, key, message):
    path = write_config(tmp_path, DATA / name)
    result = tlsgate("check", "-c", str(path))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.startswith("tlsgate: ")]
    assert lines and all(line.startswith(f"{DATA / name}: ") for line in lines), result.stderr
    if key:
        assert (str(DATA / name), key) in {(f, k) for f, k, _ in problems(result.stderr)}
        assert message in result.stderr
    # The same file makes `policy test` refuse to run as well.
    refused = policy_test(path, "--endpoint", "app", "--client-ip", "1.2.3.4")
    assert refused.returncode == 2 and refused.stdout == ""
