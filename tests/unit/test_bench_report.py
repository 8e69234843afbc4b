"""scripts/bench's report: medians, ratios to HAProxy and direct, and the issue's verdicts.

The numbers the docs publish come from `benchlib.report`; these tests feed it samples
whose medians and ratios are known and check what it concludes, including a target
missed and a case not measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from benchlib.cases import Sample  # noqa: E402
from benchlib.report import GOALS, markdown, resummarise, summarise  # noqa: E402

META = {
    "date": "2026-11-28 12:00 UTC",
    "machine": {"cores": "2", "cpu": "test", "memory": "1 GiB", "os": "test", "kernel": "0"},
    "versions": {"tlsgate": "0"},
    "settings": {"runs": 3, "seconds": 4, "mode": "full", "wall_seconds": 1, "other_load": 0.0},
    "notes": {"tlsgate": "2 workers"},
    "termination": {"tlsgate": "yes", "haproxy": "yes"},
    "skipped": [],
    "idle_connections": 100,
    "idle_tls_connections": 10,
    "idle_note": "",
}


def conn_samples(
    case: str, target: str, rates: list[float], cpu_per_conn_us: float
) -> list[Sample]:
    """One 4-second run per rate; the gateway spent ``cpu_per_conn_us`` per connection."""
    samples = []
    for run, rate in enumerate(rates, 1):
        requests = int(rate * 4)
        samples.append(
            Sample(case, target, run, seconds=4.0, requests=requests, bytes=requests * 100,
                   cpu_seconds=None if target == "direct" else requests * cpu_per_conn_us / 1e6)
        )  # fmt: skip
    return samples


def goal(results: dict, case: str, metric: str) -> dict:
    return next(g for g in results["goals"] if g["case"] == case and g["metric"] == metric)


def test_ratios_are_medians_over_medians():
    samples = (
        conn_samples("pass_conn", "tlsgate", [900, 850, 1000], 400)
        + conn_samples("pass_conn", "haproxy", [1000, 1100, 900], 250)
        + conn_samples("pass_conn", "direct", [2000, 2000, 2000], 0)
    )
    results = summarise(samples, META)
    rate = results["cases"]["pass_conn"]["tlsgate"]["rate"]
    assert (rate["median"], rate["min"], rate["max"], rate["n"]) == (900, 850, 1000, 3)
    ratios = results["ratios"]["pass_conn"]["tlsgate"]
    assert ratios["rate/haproxy"] == pytest.approx(0.9)
    assert ratios["rate/direct"] == pytest.approx(0.45)
    assert ratios["cpu_per_10k/haproxy"] == pytest.approx(1.6)
    assert "rate/haproxy" not in results["ratios"]["pass_conn"]["haproxy"]  # not to itself


@pytest.mark.parametrize(
    ("tlsgate_rate", "met"), [(900, True), (899, False), (1200, True)]
)  # fmt: skip
def test_a_minimum_goal_is_met_at_the_goal_and_missed_below_it(tlsgate_rate, met):
    samples = conn_samples("pass_conn", "tlsgate", [tlsgate_rate], 300) + conn_samples(
        "pass_conn", "haproxy", [1000], 250
    )
    results = summarise(samples, META)
    assert goal(results, "pass_conn", "rate")["met"] is met
    assert goal(results, "pass_conn", "cpu_per_10k")["met"] is True  # 1.2x against <= 2.5x


@pytest.mark.parametrize(("cpu_us", "met"), [(375, True), (376, False)])
def test_a_maximum_goal_is_met_at_the_goal_and_missed_above_it(cpu_us, met):
    samples = conn_samples("term_conn", "tlsgate", [1000], cpu_us) + conn_samples(
        "term_conn", "haproxy", [1000], 250
    )
    assert goal(summarise(samples, META), "term_conn", "cpu_per_10k")["met"] is met


def test_a_missed_goal_is_shown_in_bold_and_an_unmeasured_one_as_such():
    samples = conn_samples("pass_conn", "tlsgate", [800], 300) + conn_samples(
        "pass_conn", "haproxy", [1000], 250
    )
    results = summarise(samples, META)
    text = markdown(results)
    assert "| Passthrough new-connection rate | ≥ 0.9× | 0.80× | **no** |" in text
    assert "| Passthrough throughput (MB/s) | ≥ 0.95× | not measured | – |" in text
    assert len([g for g in results["goals"] if g["met"] is None]) == len(GOALS) - 2


def test_added_latency_is_taken_against_direct_in_the_same_run():
    samples = []
    for run, (direct, tlsgate, haproxy) in enumerate([(100, 180, 140), (300, 420, 360)], 1):
        for target, p50 in (("direct", direct), ("tlsgate", tlsgate), ("haproxy", haproxy)):
            samples.append(Sample("latency", target, run, values={"connection_p50_us": p50}))
    results = summarise(samples, META)
    added = results["cases"]["latency"]["tlsgate"]["added_connection_p50_us"]
    assert (added["min"], added["max"]) == (80, 120)  # 180-100 and 420-300, not 420-100
    ratio = results["ratios"]["latency"]["tlsgate"]["added_connection_p50_us/haproxy"]
    assert ratio == pytest.approx(100 / 50)
    assert goal(results, "latency", "added_connection_p50_us")["met"] is True


def test_held_connections_count_the_worst_run():
    samples = [
        Sample("idle", "tlsgate", run, values={"per_connection_bytes": 2048, "held": held,
                                                "fds_per_connection": 1.0})
        for run, held in ((1, 100), (2, 97))
    ]  # fmt: skip
    held = next(g for g in summarise(samples, META)["goals"] if g["kind"] == "all")
    assert (held["ratio"], held["met"]) == (97, False)


def test_a_saved_run_renders_the_same_page_again():
    samples = conn_samples("pass_conn", "tlsgate", [950, 900], 300) + conn_samples(
        "pass_conn", "haproxy", [1000, 980], 250
    )
    results = summarise(samples, META)
    saved = json.loads(json.dumps(results, default=str))  # what --json writes
    assert markdown(resummarise(saved)) == markdown(results)


def test_failed_runs_are_listed_and_left_out_of_the_medians():
    samples = conn_samples("pass_conn", "tlsgate", [900], 300) + [
        Sample("pass_conn", "tlsgate", 2, failure="wrk printed no result")
    ]
    results = summarise(samples, META)
    assert results["cases"]["pass_conn"]["tlsgate"]["rate"]["n"] == 1
    assert results["failures"] == ["pass_conn run 2 tlsgate: wrk printed no result"]
    assert "- pass_conn run 2 tlsgate: wrk printed no result" in markdown(results)
