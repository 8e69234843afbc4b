"""Run the atheris fuzz targets for a fixed time, a few at a time, and print a figures table.

    python scripts/fuzz/run.py                      # every target, 10 minutes each, 2 at a time
    python scripts/fuzz/run.py --time 60 config     # one target, one minute
    python scripts/fuzz/run.py --jobs 1 --rss 2048 --timeout 5

Each target runs as ``fuzz_<target>.py -max_total_time=T -timeout=S -rss_limit_mb=M
-print_final_stats=1`` with its default corpora (see fuzzlib.py); its log goes to
``$TLSGATE_FUZZ_DIR/<target>/fuzz.log`` (default /tmp/tlsgate-fuzz). The table
printed at the end (Markdown, for docs/reliability.md) gives for each target the
executions, executions per second, libFuzzer's coverage counters (``cov``: edges,
``ft``: features) and corpus size at the end, the time it ran, and its findings:
the crash/timeout/oom files libFuzzer wrote, or "none". A finding ends that
target's run early, as libFuzzer does; replay it with
``python scripts/fuzz/fuzz_<target>.py <file>``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fuzzchecks import TARGETS  # noqa: E402
from fuzzlib import work_dir  # noqa: E402

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.MULTILINE)
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    target: str
    seconds: float
    executions: int
    exec_per_second: int
    cov: int
    ft: int
    corpus: int
    findings: list[str]
    exit_code: int

    def row(self) -> str:
        found = ", ".join(Path(f).name for f in self.findings) or "none"
        return (
            f"| {self.target} | {self.seconds / 60:.1f} min | {self.executions:,} | "
            f"{self.exec_per_second:,} | {self.cov} | {self.ft} | {self.corpus} | {found} |"
        )


def run_target(target: str, seconds: int, timeout: int, rss_mb: int) -> Result:
    log_path = work_dir(target) / "fuzz.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(HERE / f"fuzz_{target}.py"),
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-rss_limit_mb={rss_mb}",
        "-print_final_stats=1",
    ]
    started = time.monotonic()
    with open(log_path, "w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    statuses = _STATUS.findall(text)
    last = statuses[-1] if statuses else ("0", "0", "0", "0")
    stats = {name: int(value) for name, value in _STAT.findall(text)}
    return Result(
        target=target,
        seconds=elapsed,
        executions=stats.get("number_of_executed_units", int(last[0])),
        exec_per_second=stats.get("average_exec_per_sec", 0),
        cov=int(last[1]),
        ft=int(last[2]),
        corpus=int(last[3]),
        findings=_ARTIFACT.findall(text),
        exit_code=completed.returncode,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (all)")
    parser.add_argument("--time", type=int, default=600, help="seconds per target (600)")
    parser.add_argument("--jobs", type=int, default=2, help="targets at a time (2)")
    parser.add_argument("--timeout", type=int, default=5, help="seconds for one input (5)")
    parser.add_argument("--rss", type=int, default=2048, help="memory limit in MB (2048)")
    args = parser.parse_args(argv)
    targets = args.targets or list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(
            pool.map(lambda t: run_target(t, args.time, args.timeout, args.rss), targets)
        )
    print("| target | ran | executions | exec/s | cov | ft | corpus | findings |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        print(result.row())
    return 1 if any(r.findings or r.exit_code for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
