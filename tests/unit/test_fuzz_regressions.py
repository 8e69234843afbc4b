"""Replays of what fuzzing found, and of the seed corpora, through the fuzz targets' own checks.

Every file in tests/data/fuzz/regressions/<target>/ is an input that once failed the
check in scripts/fuzz/fuzzchecks/<target>.py; it must pass now. Inputs of findings
that are reported but not fixed yet (`fuzzchecks.known.OPEN`, in code owned by
others) are strict xfails: when their fix lands the test fails until the entry is
removed. The seeds in tests/data/fuzz/seeds/<target>/ must pass too, which keeps
the checks and the seeds honest without atheris (not a CI dependency). Each
fixed finding also has a direct test below that says what the fix promises.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tlsgate.config.load import load_config, parse_config
from tlsgate.config.termination import resolve_material
from tlsgate.errors import ConfigError
from tlsgate.proto.proxy_protocol import ProxyHeaderError, parse_proxy_header

REPO = Path(__file__).resolve().parents[2]
FUZZ_DATA = REPO / "tests" / "data" / "fuzz"
sys.path.insert(0, str(REPO / "scripts" / "fuzz"))

from fuzzchecks import TARGETS, load_check  # noqa: E402
from fuzzchecks.known import OPEN, is_known  # noqa: E402

OPEN_BY_FILE = {finding.regression: finding for finding in OPEN}


def inputs(kind: str) -> list[tuple[str, Path]]:
    return [
        (target, path)
        for target in TARGETS
        for path in sorted((FUZZ_DATA / kind / target).glob("*"))
        if path.is_file()
    ]


def regression_params():
    for target, path in inputs("regressions"):
        name = f"{target}/{path.name}"
        finding = OPEN_BY_FILE.get(name)
        marks = []
        if finding is not None:
            marks = [
                pytest.mark.xfail(strict=True, raises=finding.exception, reason=finding.summary)
            ]
        yield pytest.param(target, path, id=name, marks=marks)


@pytest.mark.parametrize(("target", "path"), list(regression_params()))
def test_regression_input_passes_its_check(target, path):
    load_check(target)(path.read_bytes())


@pytest.mark.parametrize(
    ("target", "path"), [pytest.param(t, p, id=f"{t}/{p.name}") for t, p in inputs("seeds")]
)
def test_seed_passes_its_check(target, path):
    try:
        load_check(target)(path.read_bytes())
    except Exception as error:
        # A seed may hit an open finding (the harness skips those too), nothing else.
        if is_known(error) is None:
            raise


def test_every_open_finding_has_its_input_stored():
    stored = {f"{target}/{path.name}" for target, path in inputs("regressions")}
    assert set(OPEN_BY_FILE) <= stored


def test_every_target_has_seeds_and_clienthello_seeds_cover_every_capture():
    for target in TARGETS:
        assert any((FUZZ_DATA / "seeds" / target).iterdir()), target
    captures = {p.stem for p in (REPO / "tests" / "data" / "clienthello").glob("*.hex")}
    seeds = {p.name.split(".")[0] for p in (FUZZ_DATA / "seeds" / "clienthello").iterdir()}
    assert captures <= seeds, "run scripts/fuzz/make_seeds.py"


# -- fixed findings, stated directly ------------------------------------------------------


def test_proxy_v1_line_with_a_lone_lf_is_rejected_however_it_is_split():
    """Found by fuzz_proxy_header: ``PROXY UNKNOWN \\n...\\r\\n`` was accepted whole but
    rejected while incomplete, so the outcome depended on how reads split the line."""
    data = (FUZZ_DATA / "regressions" / "proxy_header" / "v1_unknown_lone_lf.bin").read_bytes()
    assert b"\n" in data[: data.index(b"\r\n")]
    with pytest.raises(ProxyHeaderError, match="lone CR or LF"):
        parse_proxy_header(data)
    for cut in range(1, len(data)):
        try:
            outcome = parse_proxy_header(data[:cut])
        except ProxyHeaderError:
            continue
        assert outcome is None, cut
    with pytest.raises(ProxyHeaderError, match="lone CR or LF"):
        parse_proxy_header(b"PROXY UNKNOWN a\rb\r\n")
    assert parse_proxy_header(b"PROXY UNKNOWN ::1 ::2 1 2\r\n").family == "UNSPEC"


def test_inline_policy_with_a_toml_date_is_a_config_error_at_its_key_path():
    """Found by fuzz_config: a TOML date inside an inline traffic_policy raised TypeError
    (the policy is kept as JSON) instead of a ConfigError."""
    path = FUZZ_DATA / "regressions" / "config" / "inline_policy_date.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(p.key_path, p.message) for p in info.value.problems] == [
        (
            "endpoints[0].traffic_policy.on_tcp_connect[0].name",
            "a traffic policy holds JSON values only, got date 1979-05-27",
        )
    ]
    data = tomllib.loads(path.read_text())
    rule = data["endpoints"][0]["traffic_policy"]["on_tcp_connect"][0]
    rule["name"] = "dated"
    rule["actions"] = [
        {"type": "log", "config": {"metadata": {"at": [tomllib.loads("t = 07:32:00")["t"]]}}}
    ]
    with pytest.raises(ConfigError) as info:
        parse_config(data, "<test>", REPO)
    assert [p.key_path for p in info.value.problems] == [
        "endpoints[0].traffic_policy.on_tcp_connect[0].actions[0].config.metadata.at[0]"
    ]


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ('[gateway]\nstate_dir = "~no-such-user-tlsgate/state"\n', "gateway.state_dir"),
        ('[events]\nfile = "~no-such-user-tlsgate/events.jsonl"\n', "events.file"),
        (
            '[[endpoints]]\nname = "a"\nurl = "tls://a.example.com"\n'
            'upstream = { url = "tls://b.example.com:1", tls_verify_cas = "~no-such-user-tlsgate/ca.pem" }\n',
            "endpoints[0].upstream.tls_verify_cas",
        ),
        (
            '[[endpoints]]\nname = "a"\nurl = "tls://a.example.com"\nupstream = { url = 9443 }\n'
            'traffic_policy_file = "~no-such-user-tlsgate/policy.yml"\n',
            "endpoints[0].traffic_policy_file",
        ),
    ],
)
def test_a_path_under_an_unknown_users_home_is_a_config_error(tmp_path, text, key_path):
    """Found by fuzz_config: ``~name`` for a user that does not exist made
    Path.expanduser raise RuntimeError out of the loader."""
    path = tmp_path / "tlsgate.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    messages = {p.key_path: p.message for p in info.value.problems}
    assert messages[key_path] == (
        'cannot expand "~no-such-user-tlsgate": no such user, or no home directory'
    )


def test_traffic_policy_file_with_a_nul_is_a_config_error():
    """Seen while fixing the finding above: open() raises ValueError on a NUL, which
    the policy loader does not catch; the path is now checked like every other."""
    path = FUZZ_DATA / "regressions" / "config" / "policy_file_nul.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(p.key_path, p.message) for p in info.value.problems] == [
        ("endpoints[0].traffic_policy_file", "a path cannot contain a NUL character")
    ]


def test_terminate_tls_material_under_an_unknown_users_home_stays_unexpanded(tmp_path):
    """The worker resolves rendered certificate paths with the same helper at run time;
    an unknown ~user must give a path that fails to load, not a RuntimeError."""
    resolved = resolve_material("~no-such-user-tlsgate/cert.pem", tmp_path)
    assert resolved == str(tmp_path / "~no-such-user-tlsgate" / "cert.pem")


def test_the_config_target_removes_its_scratch_directory_at_exit():
    # It holds a private key: one left behind per test run would pile up in /tmp.
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from fuzzchecks import config; d = config.base_dir();"
        "assert (d / 'key.pem').exists(); print(d)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "scripts" / "fuzz")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    scratch = Path(done.stdout.strip())
    assert scratch.name.startswith("tlsgate-fuzz-config-")
    assert not scratch.exists()
