"""Presentation of results, after the run: a rich table, metrics JSON, sweep CSV and plots (matplotlib)."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(x: float) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else f"{x:,.1f}"


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    req = summary["requests"]
    table = Table(title=f"{summary['name']} ({summary['mode']}, seed {summary['seed']})", show_header=True)
    table.add_column("metric")
    table.add_column("p50", justify="right")
    table.add_column("p95", justify="right")
    table.add_column("p99", justify="right")
    table.add_column("mean", justify="right")
    for key, label in (("ttft_ms", "TTFT ms"), ("tpot_ms", "TPOT ms"), ("latency_s", "latency s")):
        q = summary[key]
        table.add_row(label, _fmt(q["p50"]), _fmt(q["p95"]), _fmt(q["p99"]), _fmt(q["mean"]))
    console.print(table)
    slo = summary["slo"]
    console.print(
        f"throughput {summary['throughput_tokens_per_s']:,.1f} tokens/s   "
        f"goodput {summary['goodput_tokens_per_s']:,.1f} tokens/s "
        f"(TTFT <= {slo['ttft_ms']:g} ms, TPOT <= {slo['tpot_ms']:g} ms: {slo['attainment']:.1%} of requests)")
    console.print(
        f"requests {req['completed']:,} completed, {req['admission_waits']:,} waited for KV admission   "
        f"acceptance {summary['acceptance']:.1%}   tokens/round {summary['mean_accepted_length']:.2f}   "
        f"target utilisation {summary['target_utilisation']:.1%}")
    console.print(f"simulated {summary['simulated_s']:.1f} s in {summary['wall_s']:.2f} s of wall time")


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")


FLAT_COLUMNS = ("throughput_tokens_per_s", "goodput_tokens_per_s", "acceptance", "mean_accepted_length",
                "target_utilisation", "wall_s")


def flatten(summary: dict[str, Any]) -> dict[str, Any]:
    row = {k: summary[k] for k in FLAT_COLUMNS}
    for key in ("ttft_ms", "tpot_ms"):
        for q in ("p50", "p95", "p99"):
            row[f"{key}_{q}"] = summary[key][q]
    row["slo_attainment"] = summary["slo"]["attainment"]
    row["requests_completed"] = summary["requests"]["completed"]
    return row


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_sweep(rows: list[dict[str, Any]], x: str, series: str | None, metrics: list[str], path: Path,
               title: str = "") -> None:
    """One panel per metric: metric against parameter `x`, one line per value of parameter `series`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r[series] if series else ""].append(r)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for label, items in groups.items():
            items = sorted(items, key=lambda r: r[x])
            ax.plot([r[x] for r in items], [r[metric] for r in items], "o-", label=f"{series}={label}" if series
                    else None)
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
