"""docs/benchmarks.png: one panel per figure that decides, bars per target, min–max whiskers.

Needs matplotlib (``pip install -e '.[bench]'``); without it `draw` says so and
returns False, and the markdown is written all the same.
"""

from __future__ import annotations

from pathlib import Path

TARGETS = ("direct", "tlsgate", "haproxy", "nginx", "sniproxy")
COLOURS = {
    "direct": "#999999",
    "tlsgate": "#d62728",
    "haproxy": "#1f77b4",
    "nginx": "#2ca02c",
    "sniproxy": "#9467bd",
}
# (title, [(case, metric, series label)], scale)
PANELS = (
    ("New connections per second", [("pass_conn", "rate", "passthrough"), ("term_conn", "rate", "termination")], 1),
    ("Gateway CPU-seconds per 10,000 connections",
     [("pass_conn", "cpu_per_10k", "passthrough"), ("term_conn", "cpu_per_10k", "termination")], 1),
    ("Throughput, MB/s", [("pass_tput", "mbps", "passthrough"), ("term_tput", "mbps", "termination")], 1),
    ("Gateway CPU-seconds per GiB",
     [("pass_tput", "cpu_per_gib", "passthrough"), ("term_tput", "cpu_per_gib", "termination")], 1),
    ("Memory per idle connection, KiB",
     [("idle", "per_conn_kib", "passthrough"), ("idle_tls", "per_conn_kib", "terminated")], 1),
    ("Added p50 latency over direct, µs",
     [("latency", "added_request_p50_us", "request"), ("latency", "added_connection_p50_us", "new connection")], 1),
)  # fmt: skip


def draw(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        print(
            "bench: matplotlib is not installed (pip install -e '.[bench]'): no chart", flush=True
        )
        return False
    cases = results["cases"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (title, series, _scale) in zip(axes.flat, PANELS, strict=True):
        present = [s for s in series if s[0] in cases]
        ax.set_title(title, fontsize=10)
        if not present:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        shown = [t for t in TARGETS if any(cases[c].get(t, {}).get(m) for c, m, _ in present)]
        width = 0.8 / len(present)
        handles = []
        for index, (case, metric, label) in enumerate(present):
            hatch = None if index == 0 else "//"
            xs, heights, lows, highs, colours = [], [], [], [], []
            for position, target in enumerate(shown):
                stats = cases[case].get(target, {}).get(metric)
                if not stats:
                    continue
                xs.append(position + (index - (len(present) - 1) / 2) * width)
                heights.append(stats["median"])
                lows.append(stats["median"] - stats["min"])
                highs.append(stats["max"] - stats["median"])
                colours.append(COLOURS[target])
            ax.bar(xs, heights, width * 0.95, color=colours, yerr=[lows, highs], capsize=3,
                   alpha=1.0 if index == 0 else 0.55, hatch=hatch, edgecolor="black", linewidth=0.4)  # fmt: skip
            handles.append(Patch(facecolor="white", edgecolor="black", hatch=hatch, label=label))
        ax.set_xticks(range(len(shown)), shown, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if len(present) > 1:
            ax.legend(handles=handles, fontsize=8)
    meta = results["meta"]
    fig.suptitle(
        f"tlsgate vs HAProxy, nginx, sniproxy — {meta['machine']['cores']} cores, {meta['date']} "
        f"(median of {meta['settings']['runs']} runs, whiskers: min–max)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
