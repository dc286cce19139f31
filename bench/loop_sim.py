"""DSD-Sim replaying the metrics-loop benchmark's trace: each policy's tokens/s, phase by phase and over the trace.

    python bench/loop_bench.py     # measures docs/benchmarks/loop-runs.json (and loop.{csv,md,png})
    python bench/loop_sim.py       # replays it: docs/simulator/loop-replay.{csv,md}

What the simulator is given, all measured in the same run (what it predicts, tokens/s, is not among them):
  - the forward pass cost, piecewise linear in tokens, fitted to every pass the target traced
    (`dsd target --pass-trace`; one client, so one sequence per pass);
  - the serving stack's time outside the passes: per request before the first token and per target-only step,
    from the target-alone policy; per verify round, from static gamma 4. Those two policies are therefore fits,
    not predictions; the runtime-adaptive and operator-loop policies are predictions;
  - per policy and phase, the drafting the run measured: the share of steps the target decoded alone, the
    window of every verify round (from the traced verify passes: an adaptive window varies per round), the
    acceptance by position (the draft's counters), the phase's RTT and the mean prompt and answer lengths;
  - and what the target-only steps drafted for themselves (the target's counters by window and position): the
    traced passes of those windows are not the draft's rounds, so they are taken out of the verify windows.
Each phase is one closed-loop client for the phase's duration, as the benchmark runs it.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

from capacity_sim import PassCost, drafting, fit_pass_cost, self_drafted, self_drafting_doc

from dsd_sim import scenario, simulation

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "docs" / "benchmarks" / "loop-runs.json"
MAX_WINDOW = 16  # a pass over more tokens than MAX_WINDOW + 1 is a prefill
TARGET_ALONE, STATIC = "target alone", "static gamma 4"


@dataclass(frozen=True)
class Overheads:
    """The serving stack's time outside forward passes (seconds)."""

    request_s: float  # before the first token, besides the prefill pass and the link
    step_s: float  # per target-only step
    round_s: float  # per verify round, besides the step's share


def _split(passes: list[list[float]]) -> tuple[list[float], list[float], dict[int, int]]:
    """(prefill pass seconds, decode pass seconds, verify rounds by window) of a one-client phase."""
    prefills, decodes, windows = [], [], {}
    for _, tokens, seconds in passes:
        if tokens > MAX_WINDOW + 1:
            prefills.append(seconds)
        elif tokens == 1:
            decodes.append(seconds)
        else:
            windows[int(tokens) - 1] = windows.get(int(tokens) - 1, 0) + 1
    return prefills, decodes, windows


def _verify_seconds(passes: list[list[float]]) -> float:
    return sum(s for _, tokens, s in passes if 1 < tokens <= MAX_WINDOW + 1)


def fit_overheads(phases: list[dict]) -> Overheads:
    """Request and step overheads from the target-alone phases; round overhead from static gamma 4's."""
    request = step = steps = 0.0
    n_requests = 0
    for p in (p for p in phases if p["policy"] == TARGET_ALONE):
        prefills, decodes, _ = _split(p["passes"])
        ttft = sum(r["ttft_s"] for r in p["requests"])
        request += ttft - sum(prefills) - len(p["requests"]) * p["rtt_ms"] / 1000
        n_requests += len(p["requests"])
        step += p["seconds"] - ttft - sum(decodes)
        steps += p["tokens"] - len(p["requests"])
    request_s, step_s = max(0.0, request / n_requests), max(0.0, step / steps)
    residual = rounds = 0.0
    for p in (p for p in phases if p["policy"] == STATIC):
        _, decodes, _ = _split(p["passes"])
        c = p["counters"]
        ttft = sum(r["ttft_s"] for r in p["requests"])
        n_rounds, alone = c.get("rounds", 0.0), self_drafted(p).steps
        residual += (p["seconds"] - ttft - sum(decodes) - _verify_seconds(p["passes"])
                     - n_rounds * p["rtt_ms"] / 1000 - step_s * (alone + n_rounds))
        rounds += n_rounds
    return Overheads(request_s, step_s, max(0.0, residual / rounds) if rounds else 0.0)


def replay(phase: dict, cost: PassCost, over: Overheads, phase_s: float) -> dict:
    """One phase in DSD-Sim: tokens/s and TPOT p50."""
    _, gamma, alphas = drafting(phase)
    _, _, windows = _split(phase["passes"])
    own = self_drafted(phase)
    for k, steps in own.steps_by_window.items():  # the target's own windows were not the draft's rounds
        if k and k in windows:
            windows[k] = max(0, windows[k] - round(steps))
    windows = {k: n for k, n in windows.items() if n}
    rounds = phase["counters"].get("rounds", 0.0)
    share = own.steps / (own.steps + rounds) if own.steps + rounds else 1.0
    requests = phase["requests"]
    alone = phase["policy"] == TARGET_ALONE or not windows
    doc = {
        "name": f"loop-{phase['policy']}-{phase['phase']}", "duration_s": phase_s,
        "mode": "target_only" if alone else "hybrid", "drafts": {"count": 1},
        "targets": {"verify_points_ms": cost.points_ms(), "host_overhead_ms": 1000 * over.step_s,
                    "request_overhead_ms": 1000 * over.request_s, "batching": {"max_batch": 1}},
        "network": {"rtt_ms": {"mean": phase["rtt_ms"]}},
        "acceptance": {"kind": "trace", "alpha_by_position": alphas},
        "gamma": {"value": min(gamma, MAX_WINDOW), "max": MAX_WINDOW},
        "hybrid": {"target_only_share": share, "round_overhead_ms": 1000 * over.round_s,
                   "window_shares": [windows.get(k, 0) for k in range(1, max(windows) + 1)] if windows else None},
        "self_drafting": self_drafting_doc(own),
        "workload": {"kind": "closed",
                     "prompt_tokens": {"mean": sum(r["prompt_tokens"] for r in requests) / len(requests)},
                     "output_tokens": {"mean": sum(r["completion_tokens"] for r in requests) / len(requests)}},
    }
    s = simulation.run(scenario.from_dict(doc)).summary()
    return {"tokens": s["tokens_total"], "seconds": s["simulated_s"], "tpot_p50_ms": s["tpot_ms"]["p50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "simulator")
    args = parser.parse_args()
    runs = json.loads(args.runs.read_text())
    phases = runs["phases"]
    cost = fit_pass_cost(phases)
    over = fit_overheads(phases)
    rows = []
    for p in phases:
        sim = replay(p, cost, over, runs["phase_s"])
        rows.append({"policy": p["policy"], "phase": p["phase"], "workload": p["workload"], "rtt_ms": p["rtt_ms"],
                     "measured_tokens_per_s": p["tokens"] / p["seconds"],
                     "predicted_tokens_per_s": sim["tokens"] / sim["seconds"],
                     "sim_tokens": sim["tokens"], "sim_seconds": sim["seconds"],
                     "measured_tokens": p["tokens"], "measured_seconds": p["seconds"]})
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "loop-replay.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _report(rows, runs, cost, over, args.out / "loop-replay.md")


def _report(rows: list[dict], runs: dict, cost: PassCost, over: Overheads, path: Path) -> None:
    fitted = {TARGET_ALONE, STATIC}
    lines = [f"Pass cost fitted to the run: {cost.describe()}. Serving stack outside the passes: "
             f"{1000 * over.request_s:.1f} ms per request and {1000 * over.step_s:.1f} ms per target-only step "
             f"(fitted on the target-alone policy), {1000 * over.round_s:.1f} ms more per verify round (fitted on "
             "static gamma 4).", "",
             "| policy | tokens/s measured | tokens/s DSD-Sim | error | |", "| --- | --- | --- | --- | --- |"]
    for policy in runs["policies"]:
        mine = [r for r in rows if r["policy"] == policy]
        measured = sum(r["measured_tokens"] for r in mine) / sum(r["measured_seconds"] for r in mine)
        predicted = sum(r["sim_tokens"] for r in mine) / sum(r["sim_seconds"] for r in mine)
        lines.append(f"| {policy} | {measured:.1f} | {predicted:.1f} | {100 * (predicted / measured - 1):+.1f} % | "
                     f"{'fitted' if policy in fitted else 'predicted'} |")
    lines += ["", "| policy | phase | workload | RTT ms | measured | DSD-Sim | error |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['phase']} | {r['workload']} | {r['rtt_ms']:.0f} | "
                     f"{r['measured_tokens_per_s']:.1f} | {r['predicted_tokens_per_s']:.1f} | "
                     f"{100 * (r['predicted_tokens_per_s'] / r['measured_tokens_per_s'] - 1):+.1f} % |")
    text = "\n".join(lines)
    path.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
