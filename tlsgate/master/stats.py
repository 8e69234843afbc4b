"""What the master knows about traffic: the sum of its workers' reports.

Each worker sends a cumulative report every second (tlsgate/worker/reporter.py);
`GatewayStats` keeps the latest one per living worker and, when a worker exits,
folds its last report into ``retired``, so totals never go backwards (the
Prometheus counters in tlsgate/metrics.py rely on that). Used by the request
handlers (tlsgate/master/handlers.py) and the metrics endpoint.
"""

from __future__ import annotations

import copy
from typing import Any

from tlsgate.control.counters import add_counters, empty_counters


class GatewayStats:
    def __init__(self) -> None:
        self.reports: dict[int, dict[str, Any]] = {}
        """The latest report of each living worker, by pid."""
        self.retired: dict[str, Any] = empty_counters()
        """Counters of workers that have exited, summed."""
        self.retired_dropped_events = 0

    def on_report(self, pid: int, report: dict[str, Any]) -> None:
        self.reports[pid] = report

    def worker_gone(self, pid: int) -> None:
        report = self.reports.pop(pid, None)
        if report is not None:
            add_counters(self.retired, report.get("counters", {}))
            self.retired_dropped_events += int(report.get("dropped_events", 0))

    def counters(self) -> dict[str, Any]:
        """Every worker's counters, living and exited, added up."""
        total = copy.deepcopy(self.retired)
        for report in self.reports.values():
            add_counters(total, report.get("counters", {}))
        return total

    def active(self, pid: int) -> int:
        report = self.reports.get(pid)
        return int(report.get("active", 0)) if report else 0

    def active_by_endpoint(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for report in self.reports.values():
            for endpoint, count in report.get("active_by_endpoint", {}).items():
                result[endpoint] = result.get(endpoint, 0) + int(count)
        return result

    def active_total(self) -> int:
        return sum(int(r.get("active", 0)) for r in self.reports.values())

    def dropped_events(self) -> int:
        return self.retired_dropped_events + sum(
            int(r.get("dropped_events", 0)) for r in self.reports.values()
        )


def totals_of(counters: dict[str, Any], active: int) -> dict[str, Any]:
    """The headline numbers of ``status``: connections and bytes, summed over endpoints."""
    closed = sum(sum(by_reason.values()) for by_reason in counters.get("closed", {}).values())
    return {
        "connections_active": active,
        "connections_total": int(counters.get("accepted", 0)),
        "connections_closed": closed,
        "bytes_in": sum(counters.get("bytes_in", {}).values()),
        "bytes_out": sum(counters.get("bytes_out", {}).values()),
    }
