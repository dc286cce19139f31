"""DSD-Sim against the capacity benchmark, then the GPU case the CPU cannot show.

    python bench/capacity_bench.py      # measures docs/benchmarks/capacity.csv and capacity-runs.json
    python bench/capacity_sim.py        # calibrates, replays every wave, predicts the H200 case

Calibration (docs/simulator/capacity-calibration.{csv,md}). DSD-Sim is calibrated on each server's 1- and
32-client waves of each repeat and predicts its 4-, 8- and 16-client waves (aggregate tokens/s and TPOT), which
it is given nothing of but their requests and drafting statistics:
  - the packed pass cost, piecewise linear in tokens (knots at 8 and 64) + a term per sequence beyond the first,
    a least-squares fit to the forward passes the target traced (`dsd target --pass-trace`) in the repeat's
    calibration waves (the machine's speed drifts between repeats);
  - the serving stack's time per step outside the pass: a one-client wave's idle time per pass (wall time -
    pass seconds, per pass) is split into a part every pass pays (`per_pass`: the batcher waking, logits to
    the CPU) and a part every session's step pays, queued for one of two workers (`host_overhead` with
    host_concurrency 2: `dsd serve` runs the API and the draft in one process and the target in another, each
    under its own GIL); the split is the one (of 11) that reproduces the 32-client wave's tokens/s;
  - each wave's drafting: the share of steps decoded by the target alone, the mean window and the acceptance by
    position, from the draft's counters (rounds, proposed, per-position), and what the target-only steps drafted
    for themselves, from the target's counters (dsd_target_only_steps_total by window, self-acceptance by
    position; runs recorded before those counters: every target-only token its own step);
  - each wave's requests (prompt and completion tokens): its clients start at once, each sending its requests
    in turn, as the benchmark does.
The batched configurations gather for 5 ms like the runtime; the serialised one runs one sequence per pass.

GPU case (docs/benchmarks/capacity-h200.{md,png}, `--gpu-out` moves it): the H200 profile the device check measured
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
CALIBRATION_CLIENTS = (1, 32)  # the waves DSD-Sim is calibrated on; it predicts the others
SPLITS = 11  # candidate shares of the one-client idle time paid per pass (0, 0.1, ..., 1)
MAX_SELF_WINDOW = 16  # the largest window the target drafts for itself
REPLAY_SEEDS = 5  # each wave is replayed with these many seeds
REPLAY_HORIZON_S = 1e9  # a wave's requests all arrive before it (the replay ends when they are answered)
HOSTS = 2  # host work runs in two processes, each under its own GIL: the API + draft, and the target


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
    """Least squares over every pass the target traced in `waves` (`dsd target --pass-trace`), each wave weighing
    the same: a 32-client wave traces ten times the passes of a one-client wave, and its passes run slower
    (other sessions' work shares the CPU), so unweighted they would set the cost of the one-session passes too."""
    rows, times, weights = [], [], []
    for w in waves:
        for seqs, tokens, seconds in w["passes"]:
            rows.append(_basis(tokens, seqs))
            times.append(seconds)
            weights.append(1.0 / len(w["passes"]))
    root = np.sqrt(np.array(weights))
    coef, *_ = np.linalg.lstsq(np.array(rows) * root[:, None], np.array(times) * root, rcond=None)
    return PassCost(tuple(float(x) for x in coef), f"{len(times)} traced passes, each wave weighing the same")


def pass_speed_factor(cost: PassCost, wave: dict) -> float:
    """How much slower (> 1) or faster the wave's traced passes ran than `cost` says for their shapes."""
    predicted = sum(cost.tokens_s(int(tokens)) + cost.per_sequence_s * (seqs - 1)
                    for seqs, tokens, _ in wave["passes"])
    return sum(seconds for _, _, seconds in wave["passes"]) / predicted if predicted else 1.0


def scaled_to(cost: PassCost, wave: dict) -> PassCost:
    """The run's pass cost scaled to what this wave's passes took (one factor: how much slower or faster a pass
    ran while this wave's other work shared the CPU)."""
    factor = pass_speed_factor(cost, wave)
    return PassCost(tuple(c * factor for c in cost.coef), f"{cost.source}, x {factor:.2f} for this wave")


def idle_per_pass_s(wave: dict) -> float:
    """The wave's wall time outside forward passes, per pass."""
    c = wave["counters"]
    return max(0.0, (wave["seconds"] - c["pass_seconds"]) / c["passes"])


@dataclass(frozen=True)
class StepOverhead:
    """The serving stack's time outside the pass: per_pass_s on every pass, host_s on every session's step."""

    per_pass_s: float
    host_s: float


def fit_step_overhead(one: dict, many: dict, cost: PassCost, trace_dir: Path) -> StepOverhead:
    """One client: every step pays both parts, so they sum to its idle time per pass; many clients: the split
    that reproduces the wave's tokens/s (sessions' host work queues, the pass's part does not)."""
    idle = idle_per_pass_s(one)
    measured = many["tokens"] / many["seconds"]
    best: tuple[float, StepOverhead] | None = None
    for i in range(SPLITS):
        share = i / (SPLITS - 1)
        candidate = StepOverhead(idle * share, idle * (1 - share))
        error = abs(replay(many, cost, candidate, trace_dir)["tokens_per_s"] / measured - 1)
        if best is None or error < best[0]:
            best = (error, candidate)
    assert best is not None
    return best[1]


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


@dataclass(frozen=True)
class SelfDrafted:
    """A phase's target-only steps by the window the target drafted for itself, and that drafting's acceptance."""

    steps_by_window: dict[int, float]  # window (0 = none) -> steps
    alphas: list[float]

    @property
    def steps(self) -> float:
        return sum(self.steps_by_window.values())


def self_drafted(phase: dict) -> SelfDrafted:
    """From the target's counters; a run recorded before they existed: every target-only token its own step."""
    c = phase["counters"]
    by_window = {k: c[f"self_window_{k}"] for k in range(MAX_SELF_WINDOW + 1) if c.get(f"self_window_{k}")}
    if not any(f.startswith("self_window_") for f in c):
        by_window = {0: c.get("target_only_tokens", 0.0)}
    alphas = []
    for i in range(1, MAX_SELF_WINDOW + 1):
        reached = c.get(f"self_reached_at_{i}", 0.0)
        alphas.append(c.get(f"self_accepted_at_{i}", 0.0) / reached if reached else 0.0)
    return SelfDrafted(by_window, alphas)


def self_drafting_doc(own: SelfDrafted) -> dict:
    """The scenario's `self_drafting` section: the share of target-only steps by window, their acceptance."""
    if not any(k and n for k, n in own.steps_by_window.items()):
        return {}
    shares = [own.steps_by_window.get(k, 0.0) for k in range(max(own.steps_by_window) + 1)]
    return {"window_shares": shares, "alpha_by_position": own.alphas}


def _profile(counters: dict[str, float]) -> dict:
    """A Profile (dsd_sim.scenario) from a span's counters: the draft's windows and acceptance, the share of
    target-only steps and what they drafted for themselves."""
    _, gamma, alphas = drafting({"counters": counters})
    own = self_drafted({"counters": counters})
    rounds = counters.get("rounds", 0.0)
    share = own.steps / (own.steps + rounds) if own.steps + rounds else 1.0
    profile = {"acceptance": {"kind": "trace", "alpha_by_position": alphas},
               "hybrid": {"target_only_share": share, "window_shares": [0.0] * (min(gamma, 16) - 1) + [1.0]}}
    if self_drafting_doc(own):
        profile["self_drafting"] = self_drafting_doc(own)
    return profile


def request_profiles(wave: dict) -> dict[str, dict]:
    """Each request's own drafting, from its counters (usage.dsd), named by its place in the wave; {} for a run
    recorded before the benchmark kept them: every request then drafts as the wave's mean. Per request, not per
    kind: two quoting prompts draft as differently as a quote and a chat, and a wave's TPOT p50 is one request's."""
    if not all("counters" in r for r in wave["requests"]):
        return {}
    return {f"request-{i}": _profile(r["counters"]) for i, r in enumerate(wave["requests"])}


def replay(wave: dict, cost: PassCost, overhead: StepOverhead, trace_dir: Path, per_request: bool = True) -> dict:
    """Simulates one wave: its requests at t = 0 on one target; returns tokens/s and TPOT p50/p95.

    `per_request`: each request drafts as it did in the run; else all as the
    wave's mean (its servers' counters)."""
    _, gamma, alphas = drafting(wave)
    own = self_drafted(wave)  # the target-only steps, by the window the target drafted for itself
    rounds = wave["counters"].get("rounds", 0.0)
    share = own.steps / (own.steps + rounds) if own.steps + rounds else 1.0
    profiles = request_profiles(wave) if per_request else {}
    trace = trace_dir / f"{wave['config']}-{wave['clients']}.jsonl"
    # A client's requests run in turn, as the benchmark's clients send them (runs before that field: one each).
    trace.write_text("".join(json.dumps({"arrival_s": 0.0, "prompt_tokens": r["prompt_tokens"],
                                         "output_tokens": r["completion_tokens"], "draft": r.get("client", i),
                                         "client": r.get("client", i), "label": r.get("kind", "all"),
                                         **({"profile": f"request-{i}"} if profiles else {})}) + "\n"
                             for i, r in enumerate(wave["requests"])))
    serialised = wave["config"] == "serialised"
    doc = {
        # Every request counts: a client's later requests arrive when its previous one is answered, long after
        # t = 0, and a request is measured only when it arrives before duration_s.
        "name": f"capacity-{wave['config']}-{wave['clients']}", "duration_s": REPLAY_HORIZON_S,
        "mode": "target_only" if wave["config"] == "target-only" else "hybrid",
        "drafts": {"count": wave["clients"]},
        "targets": {"verify_points_ms": [[k, ms + 1000 * overhead.per_pass_s] for k, ms in cost.points_ms()],
                    "per_sequence_ms": cost.per_sequence_s * 1000,
                    "host_overhead_ms": overhead.host_s * 1000, "host_concurrency": HOSTS,
                    "batching": {"max_batch": 1 if serialised else 256, "max_tokens": MAX_BATCH_TOKENS,
                                 "gather_ms": 0.0 if serialised else GATHER_MS}},
        "network": {"rtt_ms": {"mean": 0}},
        "acceptance": {"kind": "trace", "alpha_by_position": alphas},
        "gamma": {"value": min(gamma, 16), "max": 16},
        "hybrid": {"target_only_share": share},
        "self_drafting": self_drafting_doc(own),
        "profiles": profiles,
        "workload": {"kind": "trace", "file": str(trace)},
    }
    # A wave is a few requests, so one seed's acceptance draws move its percentiles: the median over seeds.
    runs = [simulation.run(scenario.from_dict({**doc, "seed": seed})).summary() for seed in range(REPLAY_SEEDS)]
    metrics = {"tokens_per_s": lambda s: s["tokens_total"] / s["simulated_s"],
               "tpot_p50_ms": lambda s: s["tpot_ms"]["p50"], "tpot_p95_ms": lambda s: s["tpot_ms"]["p95"],
               "tpot_mean_ms": lambda s: s["tpot_ms"]["mean"],
               "batch_sequences": lambda s: s["batch_sequences_mean"]}
    for kind in sorted({r.get("kind", "all") for r in wave["requests"]}):
        metrics[f"tpot_p50_ms_{kind}"] = lambda s, kind=kind: s["tpot_ms_by_label"][kind]["p50"]
    return {k: float(np.median([f(s) for s in runs])) for k, f in metrics.items()}


def request_tpots_by_kind(wave: dict) -> dict[str, list[float]]:
    """Each request's TPOT (s), by the benchmark's kind of prompt (open chat, grounded)."""
    out: dict[str, list[float]] = {}
    for r in wave["requests"]:
        if r["completion_tokens"] > 1:
            out.setdefault(r.get("kind", "all"), []).append(
                (r["end_s"] - r["first_token_s"]) / (r["completion_tokens"] - 1))
    return out


def _pct(xs: list[float], p: float) -> float:
    """The order statistic dsd_sim's LogHistogram.quantile reads (the value at rank floor(q (n - 1))), so the
    measured and the simulated percentile of a wave's few requests are the same request's."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * (len(s) - 1)))]


def calibrate(runs: Path, out: Path, max_clients: int) -> list[dict]:
    """Replays every wave; a row per (config, clients): the median over the run's repeats, measured and simulated."""
    waves = json.loads(runs.read_text())
    servers: dict[tuple[str, int], dict[int, dict]] = {}  # (config, repeat) -> clients -> wave
    for w in waves:
        servers.setdefault((w["config"], w.get("repeat", 0)), {})[w["clients"]] = w
    costs = {r: fit_pass_cost([w for w in waves if w.get("repeat", 0) == r and w["clients"] in CALIBRATION_CLIENTS])
             for r in {w.get("repeat", 0) for w in waves}}
    cells: dict[tuple[str, int], list[tuple[dict, dict]]] = {}
    overheads: dict[str, list[StepOverhead]] = {}
    drift: list[float] = []  # per server: its waves' largest pass-speed factor over its smallest
    with tempfile.TemporaryDirectory() as tmp:
        for (config, repeat), by_clients in servers.items():
            cost = costs[repeat]
            overhead = fit_step_overhead(*(by_clients[n] for n in CALIBRATION_CLIENTS), cost, Path(tmp))
            overheads.setdefault(config, []).append(overhead)
            factors = [pass_speed_factor(cost, w) for w in by_clients.values()]
            drift.append(max(factors) / min(factors))
            for w in by_clients.values():
                sim = replay(w, cost, overhead, Path(tmp))
                # The same replay with the pass cost scaled to this wave's own passes: what is left is the
                # queueing and batching model alone, not how a pass's time depends on what else shares the CPU.
                own_cost = replay(w, scaled_to(cost, w), overhead, Path(tmp))
                sim["own_cost_tokens_per_s"] = own_cost["tokens_per_s"]
                sim["own_cost_tpot_p50_ms"] = own_cost["tpot_p50_ms"]
                # Every request drafting as the wave's mean: what per-request profiles change.
                sim["mean_drafting_tpot_p50_ms"] = replay(w, cost, overhead, Path(tmp), per_request=False)[
                    "tpot_p50_ms"]
                c = w["counters"]
                measured = {"tokens_per_s": w["tokens"] / w["seconds"],
                            "tpot_p50_ms": 1000 * _pct(w["tpots"], 50),
                            "tpot_p95_ms": 1000 * _pct(w["tpots"], 95),
                            "tpot_mean_ms": 1000 * float(np.mean(w["tpots"])),
                            "batch_sequences": c["pass_sequences"] / c["passes"],
                            **{f"tpot_p50_ms_{kind}": 1000 * _pct(tpots, 50)
                               for kind, tpots in request_tpots_by_kind(w).items()}}
                cells.setdefault((config, w["clients"]), []).append((measured, sim))
    rows = []
    for (config, clients), pairs in sorted(cells.items()):
        measured = {k: float(np.median([m[k] for m, _ in pairs])) for k in pairs[0][0]}
        sim = {k: float(np.median([p[k] for _, p in pairs])) for k in pairs[0][1]}
        # How far the measurement itself moves between repeats: the resolution any prediction is judged at.
        tpots = [m["tpot_p50_ms"] for m, _ in pairs]
        rows.append({"config": config, "clients": clients, "repeats": len(pairs),
                     "calibration": clients in CALIBRATION_CLIENTS,
                     **{f"measured_{k}": round(v, 2) for k, v in measured.items()},
                     "measured_tpot_p50_min_ms": round(min(tpots), 2), "measured_tpot_p50_max_ms": round(max(tpots), 2),
                     "measured_tpot_p50_spread": round(max(abs(t / measured["tpot_p50_ms"] - 1) for t in tpots), 3),
                     **{f"predicted_{k}": round(v, 2) for k, v in sim.items()},
                     "tokens_per_s_error": round(sim["tokens_per_s"] / measured["tokens_per_s"] - 1, 3),
                     "tpot_p50_error": round(sim["tpot_p50_ms"] / measured["tpot_p50_ms"] - 1, 3),
                     "tpot_mean_error": round(sim["tpot_mean_ms"] / measured["tpot_mean_ms"] - 1, 3),
                     "mean_drafting_tpot_p50_error": round(
                         sim["mean_drafting_tpot_p50_ms"] / measured["tpot_p50_ms"] - 1, 3),
                     "own_cost_tokens_per_s_error": round(
                         sim["own_cost_tokens_per_s"] / measured["tokens_per_s"] - 1, 3),
                     "own_cost_tpot_p50_error": round(sim["own_cost_tpot_p50_ms"] / measured["tpot_p50_ms"] - 1, 3),
                     **{f"tpot_p50_error_{k[len('tpot_p50_ms_'):]}": round(sim[k] / measured[k] - 1, 3)
                        for k in measured if k.startswith("tpot_p50_ms_")}})
    out.mkdir(parents=True, exist_ok=True)
    with (out / "capacity-calibration.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = _report(rows, costs, overheads, max_clients, drift)
    (out / "capacity-calibration.md").write_text(text + "\n")
    print(text)
    return rows


def _report(rows: list[dict], costs: dict[int, PassCost], overheads: dict[str, list[StepOverhead]],
            max_clients: int, drift: list[float]) -> str:
    predicted = [r for r in rows if r["clients"] <= max_clients and not r["calibration"]]
    kinds = sorted(k[len("tpot_p50_error_"):] for k in rows[0] if k.startswith("tpot_p50_error_"))
    worst = {k: max(abs(r[k]) for r in predicted)
             for k in ("tokens_per_s_error", "tpot_p50_error", "tpot_mean_error", "own_cost_tokens_per_s_error",
                       "own_cost_tpot_p50_error", "mean_drafting_tpot_p50_error", "measured_tpot_p50_spread",
                       *(f"tpot_p50_error_{kind}" for kind in kinds))}
    lines = ["Calibrated on each server's " + " and ".join(map(str, CALIBRATION_CLIENTS)) + "-client waves of each "
             "repeat; the other waves are predictions. Pass cost per repeat: "
             + "; ".join(f"repeat {r}: {c.describe()}" for r, c in sorted(costs.items()))
             + ". Time outside the pass, per pass + per session's step (per repeat): "
             + "; ".join(f"{k} " + ", ".join(f"{1000 * o.per_pass_s:.1f} + {1000 * o.host_s:.1f} ms" for o in v)
                         for k, v in overheads.items())
             + ". Medians over the run's repeats.", "",
             "| config | clients | tok/s measured | tok/s DSD-Sim | error | TPOT p50 measured | TPOT p50 DSD-Sim | "
             "error | TPOT mean measured / DSD-Sim, error | "
             "TPOT p50 error, every request drafting as the wave's mean | "
             "sequences per pass measured / DSD-Sim | tok/s, TPOT p50 error, pass cost scaled to the wave | "
             "TPOT p50 measured, repeats' range | TPOT p50 by kind of prompt (" + " / ".join(kinds)
             + "): measured / DSD-Sim, error |",
             "|---" * 14 + "|"]
    for r in rows:
        mark = " (calibration)" if r["calibration"] else ""
        lines.append(f"| {r['config']} | {r['clients']}{mark} | {r['measured_tokens_per_s']:.1f} | "
                     f"{r['predicted_tokens_per_s']:.1f} | {100 * r['tokens_per_s_error']:+.1f} % | "
                     f"{r['measured_tpot_p50_ms']:.0f} ms | {r['predicted_tpot_p50_ms']:.0f} ms | "
                     f"{100 * r['tpot_p50_error']:+.1f} % | {r['measured_tpot_mean_ms']:.0f} / "
                     f"{r['predicted_tpot_mean_ms']:.0f} ms, {100 * r['tpot_mean_error']:+.1f} % | "
                     f"{100 * r['mean_drafting_tpot_p50_error']:+.1f} % | "
                     f"{r['measured_batch_sequences']:.1f} / "
                     f"{r['predicted_batch_sequences']:.1f} | {100 * r['own_cost_tokens_per_s_error']:+.1f} %, "
                     f"{100 * r['own_cost_tpot_p50_error']:+.1f} % | {r['measured_tpot_p50_min_ms']:.0f}-"
                     f"{r['measured_tpot_p50_max_ms']:.0f} ms | "
                     + "; ".join(f"{r[f'measured_tpot_p50_ms_{k}']:.0f} / {r[f'predicted_tpot_p50_ms_{k}']:.0f} ms, "
                                 f"{100 * r[f'tpot_p50_error_{k}']:+.1f} %" for k in kinds) + " |")
    lines += ["", f"Worst error of the predicted waves up to {max_clients} clients: tokens/s "
              f"{100 * worst['tokens_per_s_error']:.1f} %, TPOT p50 {100 * worst['tpot_p50_error']:.1f} % (goal: "
              f"within 10 %), TPOT mean (over the wave's requests) {100 * worst['tpot_mean_error']:.1f} %; "
              "TPOT p50 with every request drafting as the wave's mean "
              f"{100 * worst['mean_drafting_tpot_p50_error']:.1f} %; tokens/s with the pass cost scaled to each "
              f"wave {100 * worst['own_cost_tokens_per_s_error']:.1f} %, TPOT p50 "
              f"{100 * worst['own_cost_tpot_p50_error']:.1f} %. The measured TPOT p50 of a predicted wave itself "
              f"lies up to {100 * worst['measured_tpot_p50_spread']:.1f} % from the median of its repeats (the "
              "repeats' range column): a wave of 8-16 requests mixes grounded answers (14-40 ms per token) with "
              "open-chat ones (53-117 ms), so its median moves with a request or two. Each kind's own TPOT p50 "
              "(the replay labels every request with its prompt's kind): "
              + ", ".join(f"{kind} within {100 * worst[f'tpot_p50_error_{kind}']:.1f} %" for kind in kinds)
              + ".", "",
              "How much a pass's time moves between waves: within one server (same process, same repeat, waves "
              "minutes apart) the passes of its slowest wave took "
              f"x {min(drift):.2f} to x {max(drift):.2f} (median x {float(np.median(drift)):.2f}) the time of "
              "the same pass shapes in its fastest wave. The factor is not monotone in the clients (the host work "
              "beside a pass grows with them, so part of it is contention a model could capture), the rest is "
              "the 2 shared cores drifting: a prediction from a pass cost fitted on other waves inherits it."]
    return "\n".join(lines)


def gpu_case(out: Path) -> None:
    """N edge drafts vs N target-only sessions on one H200 target, through DSD-Sim; writes capacity-h200.* to
    `out`."""
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity-h200.md").write_text(text + "\n")
    print(text)
    _plot(results, counts, out / "capacity-h200.png")


def _plot(results: dict[str, list[dict]], counts: list[int], path: Path) -> None:
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
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=RUNS, help="the waves bench/capacity_bench.py recorded")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "simulator", help="the calibration's report")
    parser.add_argument("--gpu-out", type=Path, default=REPO / "docs" / "benchmarks", help="the H200 case's report")
    parser.add_argument("--max-clients", type=int, default=16, help="the goal's range (1..N clients)")
    args = parser.parse_args()
    calibrate(args.runs, args.out, args.max_clients)
    gpu_case(args.gpu_out)


if __name__ == "__main__":
    main()
