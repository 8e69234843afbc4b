"""`scripts/bench --quick` end to end: real nginx origin, real HAProxy, real wrk, real tlsgate.

Only that the bench runs, measures both gateways without errors and cleans up after
itself; never how fast anything is (the numbers belong in docs/benchmarks.md, not here).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from benchlib import system  # noqa: E402  (the bench's own check of what it needs)

pytestmark = pytest.mark.integration

MISSING = system.missing_tools()


@pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed (CI installs {' '.join(system.PACKAGES)})",
)
def test_quick_bench_measures_tlsgate_and_haproxy_and_stops_everything(tmp_path):
    saved = tmp_path / "quick.json"
    docs = (REPO / "docs" / "benchmarks.md").read_text()
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench"), "--quick", "--seconds", "2",
         "--json", str(saved)],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(saved.read_text())
    for case in ("pass_conn", "pass_tput"):
        for target in ("tlsgate", "haproxy", "direct"):
            runs = [s for s in results["samples"] if (s["case"], s["target"]) == (case, target)]
            assert len(runs) == 1, (case, target, runs)
            assert runs[0]["requests"] > 0 and runs[0]["errors"] == 0, runs[0]
            assert not runs[0]["failure"], runs[0]
            if target != "direct":
                assert runs[0]["cpu_seconds"] > 0, runs[0]  # read from /proc for the process tree
    measured = {g["title"]: g["ratio"] for g in results["goals"] if g["ratio"] is not None}
    assert set(measured) == {
        "Passthrough throughput (MB/s)",
        "Passthrough gateway CPU per GiB",
        "Passthrough new-connection rate",
        "Passthrough gateway CPU per 10k connections",
    }
    assert "### The issue's targets (tlsgate ÷ HAProxy, same run)" in result.stdout
    # --quick writes nothing unless asked.
    assert (REPO / "docs" / "benchmarks.md").read_text() == docs
    # Every process it started is gone, and so is its run directory.
    run_dir = re.search(r"run directory (\S+);", result.stdout)
    assert run_dir, result.stdout[-2000:]
    assert not Path(run_dir[1]).exists()
    leftovers = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if run_dir[1].encode() in cmdline.read_bytes():
                leftovers.append(cmdline.parent.name)
        except OSError:
            continue  # it ended while we looked
    assert not leftovers, f"processes still running from {run_dir[1]}: {leftovers}"
