"""The scenario library's experiments: the DSD paper's claims and ours, re-run on DSD-Sim.

    python bench/sim_scenarios.py            # all experiments, ~2-4 minutes on 2 cores
    python bench/sim_scenarios.py --only speed

Writes docs/simulator/<experiment>.{csv,png} and docs/simulator/results.md (the numbers quoted in
docs/simulator.md). Every figure comes from simulator/scenarios/*.yaml plus the sweep axes below.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from dsd_sim import reporting, sweeping

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "simulator" / "scenarios"
OUT = REPO / "docs" / "simulator"


def _sweep(name: str, axes: list[str], metrics: list[str], jobs: int) -> list[dict[str, Any]]:
    parsed = [sweeping.parse_axis(a) for a in axes]
    rows = sweeping.sweep(SCENARIOS / f"{name}.yaml", parsed, jobs=jobs)
    reporting.write_csv(rows, OUT / f"{name}.csv")
    reporting.plot_sweep(rows, parsed[0].key, parsed[1].key if len(parsed) > 1 else None, metrics,
                         OUT / f"{name}.png", title=name)
    return rows


def _pick(rows: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def rtt_crossover(jobs: int) -> list[str]:
    rtts = [0, 10, 20, 30, 40, 60, 80, 120]
    rows = _sweep("rtt-crossover", [f"network.rtt_ms.mean={','.join(map(str, rtts))}",
                                    "mode=target_only,blocking,pipelined"],
                  ["tpot_ms_p50", "throughput_tokens_per_s", "ttft_ms_p50"], jobs)
    cloud = {r["network.rtt_ms.mean"]: r["tpot_ms_p50"] for r in _pick(rows, mode="target_only")}
    out = ["### Distributed vs cloud-only as RTT grows (rtt-crossover.yaml)", "",
           "| RTT ms | cloud-only TPOT p50 | blocking | pipelined | pipelined / blocking throughput |",
           "|---|---|---|---|---|"]
    crossings = {}
    for rtt in rtts:
        b = _pick(rows, mode="blocking", **{"network.rtt_ms.mean": rtt})[0]
        p = _pick(rows, mode="pipelined", **{"network.rtt_ms.mean": rtt})[0]
        out.append(f"| {rtt} | {cloud[rtt]:.1f} | {b['tpot_ms_p50']:.1f} | {p['tpot_ms_p50']:.1f} | "
                   f"{p['throughput_tokens_per_s'] / b['throughput_tokens_per_s']:.2f}x |")
        for mode, row in (("blocking", b), ("pipelined", p)):
            if mode not in crossings and row["tpot_ms_p50"] >= cloud[rtt]:
                crossings[mode] = rtt
    out.append("")
    out += [f"- {mode}: per-token latency is no better than cloud-only from RTT ~{crossings.get(mode, '>120')} ms"
            for mode in ("blocking", "pipelined")]
    return out


def adaptive_vs_static(jobs: int) -> list[str]:
    rows = _sweep("adaptive-vs-static", ["gamma.policy=static,analytic,adaptive", "mode=blocking,pipelined"],
                  ["throughput_tokens_per_s", "tpot_ms_p50", "goodput_tokens_per_s"], jobs)
    out = ["### Adaptive window vs static gamma = 4 (adaptive-vs-static.yaml: 20 targets, 600 drafts, RTT 10 ms)",
           "", "| mode | policy | throughput tokens/s | vs static | TPOT p50 ms |", "|---|---|---|---|---|"]
    for mode in ("blocking", "pipelined"):
        static = _pick(rows, mode=mode, **{"gamma.policy": "static"})[0]["throughput_tokens_per_s"]
        for policy in ("static", "analytic", "adaptive"):
            r = _pick(rows, mode=mode, **{"gamma.policy": policy})[0]
            out.append(f"| {mode} | {policy} | {r['throughput_tokens_per_s']:,.0f} | "
                       f"{r['throughput_tokens_per_s'] / static - 1:+.1%} | {r['tpot_ms_p50']:.1f} |")
    return out


def routing(jobs: int) -> list[str]:
    counts = [100, 200, 400, 600, 800]
    rows = _sweep("routing", [f"drafts.count={','.join(map(str, counts))}", "routing=random,round_robin,jsq"],
                  ["ttft_ms_p99", "tpot_ms_p95", "throughput_tokens_per_s"], jobs)
    out = ["### Routing as drafts grow (routing.yaml: 20 targets)", "",
           "| drafts | random TTFT p99 / TPOT p95 | round-robin | join-shortest-queue |", "|---|---|---|---|"]
    for n in counts:
        cells = [f"{r['ttft_ms_p99']:.0f} / {r['tpot_ms_p95']:.1f}" for r in
                 (_pick(rows, routing=k, **{"drafts.count": n})[0] for k in ("random", "round_robin", "jsq"))]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    return out


def capacity(jobs: int) -> list[str]:
    counts = [5, 10, 15, 20, 30, 40, 60, 80]
    rows = _sweep("capacity", [f"drafts.count={','.join(map(str, counts))}", "mode=target_only,fused,pipelined"],
                  ["tpot_ms_p95", "throughput_tokens_per_s", "target_utilisation"], jobs)
    out = ["### Capacity of one target (capacity.yaml): clients served with TPOT p95 within a bound", "",
           "| mode | <= 40 ms | <= 60 ms | <= 100 ms | throughput at 80 clients |", "|---|---|---|---|---|"]
    for mode in ("target_only", "fused", "pipelined"):
        mine = _pick(rows, mode=mode)
        cells = [str(max([r["drafts.count"] for r in mine if r["tpot_ms_p95"] <= bound], default=0))
                 for bound in (40, 60, 100)]
        top = _pick(mine, **{"drafts.count": counts[-1]})[0]["throughput_tokens_per_s"]
        out.append(f"| {mode} | " + " | ".join(cells) + f" | {top:,.0f} tokens/s |")
    return out


def speed(_: int) -> list[str]:
    code = ("import resource, time; from pathlib import Path; from dsd_sim import scenario, simulation; "
            "t=time.perf_counter(); r=simulation.run(scenario.load(Path('simulator/scenarios/speed-1000x20.yaml')));"
            "s=r.summary(); print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "s['rounds'], s['requests']['completed'])")
    wall, rss_kb, rounds, requests = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                                                    text=True, check=True).stdout.split()
    return ["### Speed (speed-1000x20.yaml: 1,000 drafts x 20 targets x 60 s)", "",
            f"{float(wall):.1f} s of wall time, peak RSS {int(rss_kb) / 1024:.0f} MiB, {int(rounds):,} rounds, "
            f"{int(requests):,} requests (`python bench/sim_scenarios.py --only speed`)."]


EXPERIMENTS = {"rtt": rtt_crossover, "adaptive": adaptive_vs_static, "routing": routing, "capacity": capacity,
               "speed": speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(EXPERIMENTS), action="append")
    parser.add_argument("--jobs", type=int, default=0)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# DSD-Sim scenario results", "", "Generated by `python bench/sim_scenarios.py`.", ""]
    for name in args.only or list(EXPERIMENTS):
        lines += [*EXPERIMENTS[name](args.jobs or 0), ""]
        print(f"{name} done", file=sys.stderr, flush=True)
    path = OUT / ("results.md" if not args.only else f"results-{'-'.join(args.only)}.md")
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB",
          file=sys.stderr)


if __name__ == "__main__":
    main()
