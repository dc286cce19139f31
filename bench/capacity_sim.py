"""DSD-Sim against the capacity benchmark, then the GPU case the CPU cannot show.

    python bench/capacity_bench.py      # measures docs/benchmarks/capacity.csv and capacity-runs.json
    python bench/capacity_sim.py        # calibrates, replays every wave, predicts the H200 case

Calibration (docs/simulator/capacity-calibration.{csv,md}). Everything the simulator is given comes from the
benchmark's own measurements, and what it predicts (aggregate tokens/s and TPOT of each wave) is not among them:
  - the packed pass cost, piecewise linear in tokens (knots at 8 and 64) + a term per sequence beyond the first,
    a least-squares fit to every forward pass the target traced during the run (`dsd target --pass-trace`);
  - the serving stack's time per step outside the pass, from each configuration's one-client wave
    ((wall time - pass seconds) / passes): the API, the draft process, gRPC, sampling; done for every session
    in turn by one process (host_concurrency 1: the GIL);
  - each wave's drafting: the share of steps decoded by the target alone, the mean window and the acceptance by
    position, from the draft's counters (dsd_target_only_tokens_total, rounds, proposed, per-position);
  - each wave's requests (prompt and completion tokens), all arriving at once, as the benchmark sends them.
The batched configurations gather for 5 ms like the runtime; the serialised one runs one sequence per pass.

GPU case (docs/benchmarks/capacity-h200.{md,png}): the H200 profile the device check measured
(docs/benchmarks/gpu-check-h200.json: t_v(1..17) of the 1.1B target in bf16, the draft's step): N edge drafts
(pipelined, adaptive window, RTT 10 ms) against the same target serving N target-only sessions with continuous
batching, for N = 1 to 256.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsd_sim import scenario, simulation

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "docs" / "benchmarks" / "capacity-runs.json"
H200 = REPO / "docs" / "benchmarks" / "gpu-check-h200.json"
GATHER_MS = 5.0  # the runtime's BatchingLM gather budget
MAX_BATCH_TOKENS = 1024  # the target's default --max-batch-tokens


KNOTS = (8, 64)  # where the pass cost's slope per token may change: verify windows, prefill chunks
POINTS = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256, 512, 1024)


def _basis(tokens: float, sequences: float) -> list[float]:
    return [1.0, tokens, *(max(0.0, tokens - k) for k in KNOTS), sequences - 1.0]


@dataclass(frozen=True)
class PassCost:
    """t(tokens, sequences) = f(tokens) + per_sequence_s * (sequences - 1), f piecewise linear (KNOTS)."""

    coef: tuple[float, ...]
    source: str  # what it was fitted to

    @property
    def per_sequence_s(self) -> float:
        return max(0.0, self.coef[-1])

    def tokens_s(self, tokens: int) -> float:
        return max(1e-4, sum(c * x for c, x in zip(self.coef[:-1], _basis(tokens, 1)[:-1], strict=True)))

    def points_ms(self) -> list[list[float]]:
        return [[k, round(1000 * self.tokens_s(k), 3)] for k in POINTS]

    def describe(self) -> str:
        pts = ", ".join(f"t({k}) {1000 * self.tokens_s(k):.0f} ms" for k in (1, 5, 17, 64, 256, 1024))
        return f"{pts}, + {1000 * self.per_sequence_s:.2f} ms per sequence beyond the first (fit to {self.source})"


def fit_pass_cost(waves: list[dict]) -> PassCost:
    """Least squares over every pass the target traced during the run (`dsd target --pass-trace`)."""
    passes = [p for w in waves for p in w["passes"]]
    rows = [_basis(tokens, seqs) for seqs, tokens, _ in passes]
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array([t for _, _, t in passes]), rcond=None)
    return PassCost(tuple(float(x) for x in coef), f"{len(passes)} traced passes")


def scaled_to(cost: PassCost, wave: dict) -> PassCost:
    """The run's pass cost scaled to what this wave's passes took (one factor: how much slower or faster a pass
    ran while this wave's other work shared the CPU)."""
    predicted = sum(cost.tokens_s(int(tokens)) + cost.per_sequence_s * (seqs - 1)
                    for seqs, tokens, _ in wave["passes"])
    factor = sum(seconds for _, _, seconds in wave["passes"]) / predicted if predicted else 1.0
    return PassCost(tuple(c * factor for c in cost.coef), f"{cost.source}, x {factor:.2f} for this wave")


def host_overhead_s(wave: dict) -> float:
    """One client: every step is a pass plus the serving stack's own time, so the rest of the wall time is that."""
    c = wave["counters"]
    return max(0.0, (wave["seconds"] - c["pass_seconds"]) / c["passes"])


def drafting(wave: dict) -> tuple[float, int, list[float]]:
    """(share of steps decoded by the target alone, mean window rounded, conditional acceptance by position)."""
    c = wave["counters"]
    rounds, alone = c.get("rounds", 0.0), c.get("target_only_tokens", 0.0)
    share = alone / (alone + rounds) if alone + rounds else 1.0
    gamma = max(1, round(c.get("proposed", 0.0) / rounds)) if rounds else 1
    alphas = []
    for i in range(1, 17):
        reached = c.get(f"reached_at_{i}", 0.0)
        alphas.append(c.get(f"accepted_at_{i}", 0.0) / reached if reached else 0.0)
    return share, gamma, alphas


def replay(wave: dict, cost: PassCost, host_s: float, trace_dir: Path) -> dict:
    """Simulates one wave: its requests at t = 0 on one target; returns tokens/s and TPOT p50/p95."""
    share, gamma, alphas = drafting(wave)
    trace = trace_dir / f"{wave['config']}-{wave['clients']}.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 0.0, "prompt_tokens": r["prompt_tokens"],
                                         "output_tokens": r["completion_tokens"], "draft": i}) + "\n"
                             for i, r in enumerate(wave["requests"])))
    serialised = wave["config"] == "serialised"
    doc = {
        "name": f"capacity-{wave['config']}-{wave['clients']}", "duration_s": 1.0,
        "mode": "target_only" if wave["config"] == "target-only" else "hybrid",
        "drafts": {"count": wave["clients"]},
        "targets": {"verify_points_ms": cost.points_ms(), "per_sequence_ms": cost.per_sequence_s * 1000,
                    "host_overhead_ms": host_s * 1000, "host_concurrency": 1,
                    "batching": {"max_batch": 1 if serialised else 256, "max_tokens": MAX_BATCH_TOKENS,
                                 "gather_ms": 0.0 if serialised else GATHER_MS}},
        "network": {"rtt_ms": {"mean": 0}},
        "acceptance": {"kind": "trace", "alpha_by_position": alphas},
        "gamma": {"value": min(gamma, 16), "max": 16},
        "hybrid": {"target_only_share": share},
        "workload": {"kind": "trace", "file": str(trace)},
    }
    s = simulation.run(scenario.from_dict(doc)).summary()
    return {"tokens_per_s": s["tokens_total"] / s["simulated_s"], "tpot_p50_ms": s["tpot_ms"]["p50"],
            "tpot_p95_ms": s["tpot_ms"]["p95"], "batch_sequences": s["batch_sequences_mean"]}


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def calibrate(out: Path, max_clients: int) -> list[dict]:
    """Replays every wave; a row per (config, clients): the median over the run's repeats, measured and simulated."""
    waves = json.loads(RUNS.read_text())
    cost = fit_pass_cost(waves)
    # Each repeat's own one-client wave: the machine's speed drifts between repeats.
    host = {(w["config"], w.get("repeat", 0)): host_overhead_s(w) for w in waves if w["clients"] == 1}
    cells: dict[tuple[str, int], list[tuple[dict, dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in waves:
            host_s = host[w["config"], w.get("repeat", 0)]
            sim = replay(w, cost, host_s, Path(tmp))
            # The same replay with the pass cost scaled to this wave's own passes: what is left is the queueing
            # and batching model alone, not how a pass's time depends on what else shares the CPU.
            sim["own_cost_tokens_per_s"] = replay(w, scaled_to(cost, w), host_s, Path(tmp))["tokens_per_s"]
            c = w["counters"]
            measured = {"tokens_per_s": w["tokens"] / w["seconds"],
                        "tpot_p50_ms": 1000 * _pct(w["tpots"], 50),
                        "tpot_p95_ms": 1000 * _pct(w["tpots"], 95),
                        "batch_sequences": c["pass_sequences"] / c["passes"]}
            cells.setdefault((w["config"], w["clients"]), []).append((measured, sim))
    rows = []
    for (config, clients), pairs in cells.items():
        measured = {k: float(np.median([m[k] for m, _ in pairs])) for k in pairs[0][0]}
        sim = {k: float(np.median([p[k] for _, p in pairs])) for k in pairs[0][1]}
        rows.append({"config": config, "clients": clients, "repeats": len(pairs),
                     **{f"measured_{k}": round(v, 2) for k, v in measured.items()},
                     **{f"predicted_{k}": round(v, 2) for k, v in sim.items()},
                     "tokens_per_s_error": round(sim["tokens_per_s"] / measured["tokens_per_s"] - 1, 3),
                     "tpot_p50_error": round(sim["tpot_p50_ms"] / measured["tpot_p50_ms"] - 1, 3),
                     "own_cost_tokens_per_s_error": round(
                         sim["own_cost_tokens_per_s"] / measured["tokens_per_s"] - 1, 3)})
    host_ms = {}
    for (config, _), seconds in host.items():
        host_ms.setdefault(config, []).append(1000 * seconds)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "capacity-calibration.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    within = [r for r in rows if r["clients"] <= max_clients]
    worst_tps = max(abs(r["tokens_per_s_error"]) for r in within)
    worst_tpot = max(abs(r["tpot_p50_error"]) for r in within)
    lines = [f"Pass cost fitted to the run: {cost.describe()}; serving stack per step (one-client waves, per "
             "repeat): " + ", ".join(f"{k} {min(v):.1f}-{max(v):.1f} ms" for k, v in host_ms.items())
             + ". Medians over the run's repeats.", "",
             "| config | clients | tok/s measured | tok/s DSD-Sim | error | TPOT p50 measured | TPOT p50 DSD-Sim | "
             "error | sequences per pass measured / DSD-Sim | tok/s error, pass cost scaled to the wave |",
             "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['clients']} | {r['measured_tokens_per_s']:.1f} | "
                     f"{r['predicted_tokens_per_s']:.1f} | {100 * r['tokens_per_s_error']:+.1f} % | "
                     f"{r['measured_tpot_p50_ms']:.0f} ms | {r['predicted_tpot_p50_ms']:.0f} ms | "
                     f"{100 * r['tpot_p50_error']:+.1f} % | {r['measured_batch_sequences']:.1f} / "
                     f"{r['predicted_batch_sequences']:.1f} | {100 * r['own_cost_tokens_per_s_error']:+.1f} % |")
    worst_own = max(abs(r["own_cost_tokens_per_s_error"]) for r in within)
    lines += ["", f"Worst error for 1-{max_clients} clients: tokens/s {100 * worst_tps:.1f} %, TPOT p50 "
              f"{100 * worst_tpot:.1f} % (goal: within 10 %); tokens/s with the pass cost scaled to each wave "
              f"{100 * worst_own:.1f} %."]
    text = "\n".join(lines)
    (out / "capacity-calibration.md").write_text(text + "\n")
    print(text)
    return rows


def gpu_case(out: Path) -> None:
    """N edge drafts vs N target-only sessions on one H200 target, through DSD-Sim."""
    check = json.loads(H200.read_text())["costs"]
    points = [[int(k), ms] for k, ms in check["t_v_ms"].items()]
    counts = [1, 4, 16, 64, 128, 256]
    results: dict[str, list[dict]] = {}
    for label, mode, alpha in [("target only", "target_only", 0.0), ("DSD alpha 0.6", "pipelined", 0.6),
                               ("DSD alpha 0.8", "pipelined", 0.8)]:
        results[label] = []
        for n in counts:
            doc = {"name": f"h200-{mode}-{n}", "duration_s": 60, "warmup_s": 10, "mode": mode,
                   "drafts": {"count": n, "tiers": [{"fraction": 1.0, "step_ms": check["draft_step_ms"]}]},
                   "targets": {"verify_points_ms": points, "batching": {"max_batch": 256, "max_tokens": 8192}},
                   "network": {"rtt_ms": {"mean": 10}}, "acceptance": {"alpha": alpha or 0.01, "decay": 0.97},
                   "gamma": {"policy": "adaptive", "value": 3, "max": 8},
                   "workload": {"kind": "closed", "prompt_tokens": {"mean": 128}, "output_tokens": {"mean": 128}}}
            s = simulation.run(scenario.from_dict(doc)).summary()
            results[label].append({"clients": n, "tokens_per_s": s["throughput_tokens_per_s"],
                                   "tpot_p50_ms": s["tpot_ms"]["p50"], "utilisation": s["target_utilisation"]})
    lines = [f"One {check['target_params'] / 1e9:.1f}B target in bf16 on an H200 (t_v(1) {points[0][1]:.1f} ms ... "
             f"t_v(17) {points[-1][1]:.1f} ms, measured by bench/gpu_check.py; larger passes extrapolated linearly), "
             f"edge drafts at {check['draft_step_ms']:.1f} ms per step, RTT 10 ms, closed-loop clients, 128-token "
             "prompts and answers, adaptive window. Aggregate tokens/s (TPOT p50 ms):", "",
             "| clients | " + " | ".join(results) + " | DSD alpha 0.8 / target only |",
             "|---" * (len(results) + 2) + "|"]
    for i, n in enumerate(counts):
        cells = [f"{r[i]['tokens_per_s']:.0f} ({r[i]['tpot_p50_ms']:.0f})" for r in results.values()]
        ratio = results["DSD alpha 0.8"][i]["tokens_per_s"] / results["target only"][i]["tokens_per_s"]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    text = "\n".join(lines)
    (REPO / "docs" / "benchmarks" / "capacity-h200.md").write_text(text + "\n")
    print(text)
    _plot(results, counts)


def _plot(results: dict[str, list[dict]], counts: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, rows in results.items():
        a.plot(counts, [r["tokens_per_s"] for r in rows], marker="o", label=label)
        b.plot(counts, [r["tpot_p50_ms"] for r in rows], marker="o", label=label)
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients (DSD-Sim, H200 profile)")
    a.set_ylabel("aggregate tokens/s")
    b.set_ylabel("TPOT p50 (ms)")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPO / "docs" / "benchmarks" / "capacity-h200.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "simulator")
    parser.add_argument("--max-clients", type=int, default=16, help="the goal's range (1..N clients)")
    args = parser.parse_args()
    calibrate(args.out, args.max_clients)
    gpu_case(args.out)


if __name__ == "__main__":
    main()
