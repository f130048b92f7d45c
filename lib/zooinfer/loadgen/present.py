"""Tables and the latency-vs-QPS plot of LoadGen results (markdown via ``zooinfer.report``, matplotlib)."""
from __future__ import annotations

import os
from typing import Sequence

from .server import ServerSearch
from .suite import LoadGenRun

TABLE_COLUMNS = ["model", "backend", "scenario", "bs", "result", "latency_ms_p50", "latency_ms_p90",
                 "latency_ms_p99", "samples_per_s", "qps", "target_qps", "latency_bound_ms", "server_qps_at_bound",
                 "queries", "min_duration_ms", "min_query_count", "performance_sample_count", "reason"]


def scenario_table(rows: "Sequence[dict] | LoadGenRun", columns: Sequence[str] | None = None) -> str:
    """A markdown table of scenario rows (``LoadGenRun.rows`` or a LoadGenRun): verdict, latencies (ms),
    throughput (samples/s), QPS, settings and LoadGen's reason; columns no row has are left out."""
    from ..report import markdown_table

    if isinstance(rows, LoadGenRun):
        rows = rows.rows
    rows = list(rows)
    cols = [c for c in (columns or TABLE_COLUMNS) if any(r.get(c) is not None for r in rows)]
    return markdown_table(rows, cols)


def probe_table(search: ServerSearch) -> str:
    """A markdown table of the Server search's probes (target QPS, latencies ms, meets bound, LoadGen verdict)."""
    from ..report import markdown_table

    return markdown_table(search.probes, ["target_qps", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
                                          "samples_per_s", "queries", "meets_bound", "result"])


def plot_server_search(search: ServerSearch, path: str | os.PathLike | None = None, title: str = "",
                       offline_samples_per_s: float | None = None):
    """Latency (p50/p90/p99, ms) vs target QPS over the Server search's probes, with the bound, the QPS found and
    the Offline throughput (capacity); saved as PNG when ``path`` is given. Returns the figure."""
    import sys

    import matplotlib

    if path is not None and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = sorted(search.probes, key=lambda p: p["target_qps"])
    fig, ax = plt.subplots(figsize=(7, 4))
    x = [p["target_qps"] for p in probes]
    for key, style in (("latency_ms_p50", "o-"), ("latency_ms_p90", "s--"), ("latency_ms_p99", "^-")):
        ax.plot(x, [p[key] for p in probes], style, label=key.replace("latency_ms_", ""), alpha=0.85)
    miss = [p for p in probes if not p["meets_bound"]]
    if miss:
        ax.plot([p["target_qps"] for p in miss], [p["latency_ms_p99"] for p in miss], "x", color="red", ms=9,
                label="misses the bound")
    ax.axhline(search.latency_bound_ms, color="gray", ls=":", label=f"bound {search.latency_bound_ms:.4g} ms "
                                                                     f"(p{100 * search.latency_percentile:g})")
    if search.qps is not None:
        ax.axvline(search.qps, color="green", ls="--", label=f"found {search.qps:.4g} QPS")
    cap = offline_samples_per_s or search.capacity_samples_per_s
    if cap:
        ax.axvline(cap, color="black", ls="-.", alpha=0.5, label=f"Offline {cap:.4g} samples/s")
    ax.set_xlabel("target QPS (LoadGen Server)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "Server: latency vs target QPS")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
