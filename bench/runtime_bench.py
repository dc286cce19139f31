"""Runtime benchmark: target-only decoding, Hugging Face assisted generation and DSD (blocking, pipelined) at
several emulated round-trip times, measured side by side in one run, plus the analytic bound of each DSD row.

    python bench/runtime_bench.py                      # SmolLM2-135M target + its distilled draft
    python bench/runtime_bench.py --quick              # 2 prompts, RTT 0 and 20 ms (a smoke run)

Fair-share setup: every model runs with one torch thread. The DSD target is a separate `dsd target` process
(its own core, as on a cloud GPU node), the DSD draft runs here (the edge device). Hugging Face assisted
generation runs target and draft in one process on one core, as it would on the target's machine. RTT is
emulated on the draft->target link (half each way). Each prompt runs every configuration back to back, so slow
drift of this noisy machine hits all rows alike. Greedy DSD output is checked token for token against the
target alone. Writes docs/benchmarks/runtime.{csv,png,md}.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dsd_runtime import profiling
from dsd_runtime.common import models
from dsd_runtime.draft.client import LinkEmulation
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats
from dsd_runtime.draft.windowing import WindowConfig
from dsd_spec import RoundCosts, VerifyCostModel, expected_tokens_per_round, round_time_s
from dsd_spec.sampling import SamplingParams

REPO = Path(__file__).resolve().parents[1]
# Held out: none of these topics or phrasings is in the distillation prompts (dsd_runtime.distilling).
PROMPTS = [
    "How do bees make honey?", "What should I pack for a weekend hiking trip?",
    "Explain how a bicycle gear system works.", "Write a short note inviting a neighbour to dinner.",
    "What are good habits for learning a new language?", "Why do cats purr?",
]


# mode -> (pipelined, window policy)
MODES = {"DSD blocking": (False, "static"), "DSD pipelined": (True, "static"),
         "DSD pipelined adaptive": (True, "adaptive")}


@dataclass
class Run:
    tokens: int
    seconds: float
    ttft_s: float
    stats: GenerationStats | None = None


@dataclass
class Row:
    mode: str
    rtt_ms: float
    runs: list[Run] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return sum(r.tokens for r in self.runs) / sum(r.seconds for r in self.runs)

    @property
    def ttft_ms(self) -> float:
        return 1000 * statistics.median(r.ttft_s for r in self.runs)

    @property
    def tpot_ms(self) -> float:
        """Mean time per output token after the first, over all requests."""
        return 1000 * sum(r.seconds - r.ttft_s for r in self.runs) / sum(r.tokens - 1 for r in self.runs)

    def stat_sum(self, name: str) -> float:
        return float(sum(getattr(r.stats, name) for r in self.runs if r.stats))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _FirstTokenClock:
    """A generate() streamer that records when the first new token arrives (HF puts the prompt first)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _hf_generate(target: models.LoadedModel, prompt: list[int], max_tokens: int,
                 draft: models.LoadedModel | None) -> tuple[list[int], Run]:
    ids = torch.tensor([prompt])
    clock = _FirstTokenClock()
    kwargs = {"assistant_model": draft.lm.model} if draft is not None else {}
    start = time.perf_counter()
    with torch.inference_mode():
        out = target.lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                       do_sample=False, streamer=clock, pad_token_id=target.tokenizer.eos_token_id,
                                       **kwargs)
    seconds = time.perf_counter() - start
    new = out[0, len(prompt):].tolist()
    return new, Run(len(new), seconds, (clock.first or time.perf_counter()) - start)


def _dsd(engine: DraftEngine, prompt: list[int], max_tokens: int, eos: int) -> tuple[list[int], Run]:
    stats = GenerationStats()
    req = GenerationRequest(prompt, max_tokens, SamplingParams(temperature=0.0), 0, frozenset({eos}))
    start = time.perf_counter()
    first: float | None = None
    out: list[int] = []
    for tok in engine.speculator.generate(req, None, stats):
        first = first or time.perf_counter()
        out.append(tok)
    return out, Run(len(out), time.perf_counter() - start, (first or start) - start, stats)


def _start_target(model: str, dtype: str = "auto", *extra: str, env: dict[str, str] | None = None
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """A `dsd target` process on a free port; `env`: variables to set in it besides this process's."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dsd_cli.main", "target", "--model", model, "--port", str(port),
                             "--metrics-port", "-1", "--threads", "1", "--dtype", dtype, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env} if env else None)
    return proc, f"127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=models.SMOLLM2_TARGET)
    parser.add_argument("--draft", default=models.SMOLLM2_DRAFT)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--rtts-ms", default="0,5,20,50")
    parser.add_argument("--quick", action="store_true", help="2 prompts, RTT 0 and 20 ms")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.rtts_ms = 2, "0,20"
    rtts = [float(x) for x in args.rtts_ms.split(",")]
    torch.set_num_threads(1)
    torch.manual_seed(0)

    target, draft = models.load(args.target), models.load(args.draft)
    proc, address = _start_target(args.target)
    engines = {(mode, rtt): DraftEngine(draft, address, WindowConfig(args.gamma, 1, max(8, args.gamma),
                                                                     MODES[mode][1], MODES[mode][0]),
                                        LinkEmulation(one_way_delay_ms=rtt / 2))
               for mode in MODES for rtt in rtts}
    try:
        for e in engines.values():
            e.connect(timeout_s=300)
        tok = target.tokenizer
        prompts = [profiling.chat_prompt_ids(target, p) for p in PROMPTS[:args.prompts]]
        eos = int(tok.eos_token_id)
        rows: dict[tuple[str, float], Row] = {}

        def record(mode: str, rtt: float, run: Run) -> None:
            rows.setdefault((mode, rtt), Row(mode, rtt)).runs.append(run)

        _hf_generate(target, prompts[0], 8, draft)  # warm-up of every path
        _dsd(engines[("DSD pipelined", rtts[0])], prompts[0], 8, eos)
        for i, prompt in enumerate(prompts):
            reference, run = _hf_generate(target, prompt, args.max_tokens, None)
            record("target only (HF generate)", 0, run)
            _, run = _hf_generate(target, prompt, args.max_tokens, draft)
            record("HF assisted generation", 0, run)
            for rtt in rtts:
                for mode in MODES:
                    out, run = _dsd(engines[(mode, rtt)], prompt, args.max_tokens, eos)
                    if out != reference:
                        raise SystemExit(f"LOSSLESS CHECK FAILED on prompt {i}: {mode} differs from the target alone")
                    record(mode, rtt, run)
            print(f"prompt {i + 1}/{len(prompts)} done ({len(reference)} tokens)", file=sys.stderr, flush=True)
        verify = VerifyCostModel(tuple((k, ms / 1000) for k, ms in profiling.verify_points(
            target, prompts[0], list(range(1, args.gamma + 2)))))
    finally:
        for e in engines.values():
            e.close()
        proc.terminate()
        proc.wait()
    _report(rows, verify, args.gamma, rtts, args)


def _analytic(rows: dict[tuple[str, float], Row], verify: VerifyCostModel, gamma: int, rtt: float,
              pipelined: bool) -> float:
    blocking = rows[("DSD blocking", rtt)]
    alphas = profiling.conditional_alphas([r.stats for r in blocking.runs if r.stats], gamma)
    draft_step_s = blocking.stat_sum("draft_seconds") / blocking.stat_sum("draft_steps")
    costs = RoundCosts(draft_step_s, verify, rtt / 1000)
    tokens = expected_tokens_per_round([*alphas, alphas[-1]], gamma)
    return tokens / round_time_s(costs, [*alphas, alphas[-1]], gamma, pipelined)


def _report(rows: dict[tuple[str, float], Row], verify: VerifyCostModel, gamma: int, rtts: list[float],
            args: argparse.Namespace) -> None:
    base = rows[("target only (HF generate)", 0)].tokens_per_s
    hf = rows[("HF assisted generation", 0)].tokens_per_s
    table = []
    for (mode, rtt), row in rows.items():
        dsd = mode.startswith("DSD")
        bound = _analytic(rows, verify, gamma, rtt, mode.endswith("pipelined")) if dsd and MODES[mode][1] == "static" \
            else None
        proposed, accepted, rounds = row.stat_sum("proposed"), row.stat_sum("accepted"), row.stat_sum("rounds")
        table.append({
            "mode": mode, "rtt_ms": rtt, "tokens_per_s": round(row.tokens_per_s, 2),
            "ttft_ms": round(row.ttft_ms, 1), "tpot_ms": round(row.tpot_ms, 2),
            "speedup_vs_target": round(row.tokens_per_s / base, 3),
            "vs_hf_assisted": round(row.tokens_per_s / hf, 3),
            "acceptance": round(accepted / proposed, 3) if dsd and proposed else "",
            "mean_accepted_length": round(1 + accepted / rounds, 3) if dsd and rounds else "",
            "analytic_tokens_per_s": round(bound, 2) if bound else "",
            "of_analytic": round(row.tokens_per_s / bound, 3) if bound else "",
        })
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "runtime.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    md = ["| mode | RTT ms | tokens/s | TTFT ms | TPOT ms | x target | x HF assisted | acceptance | tokens/round | "
          "analytic tokens/s | of analytic |", "|" + "---|" * 11]
    md += [f"| {r['mode']} | {r['rtt_ms']:g} | {r['tokens_per_s']} | {r['ttft_ms']} | {r['tpot_ms']} | "
           f"{r['speedup_vs_target']} | "
           f"{r['vs_hf_assisted']} | {r['acceptance']} | {r['mean_accepted_length']} | "
           f"{r['analytic_tokens_per_s']} | {r['of_analytic']} |" for r in table]
    verify_ms = ", ".join(f"t_v({k})={s * 1000:.1f}" for k, s in verify.points)
    blocking0 = rows[("DSD blocking", rtts[0])]
    step_ms = 1000 * blocking0.stat_sum("draft_seconds") / blocking0.stat_sum("draft_steps")
    md.append(f"\nMeasured costs: draft step {step_ms:.1f} ms; verify {verify_ms} ms; gamma {gamma}; "
              f"{args.prompts} prompts x up to {args.max_tokens} tokens; torch threads 1 per process; "
              f"{os.cpu_count()} CPUs.")
    (args.out / "runtime.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    _plot(table, base, hf, rtts, args.out / "runtime.png")


def _plot(table: list[dict], base: float, hf: float, rtts: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for r in table:
        if r["mode"].startswith("DSD"):
            series[r["mode"]].append((r["rtt_ms"], r["tokens_per_s"], r["analytic_tokens_per_s"]))
    for (mode, points), color in zip(series.items(), ("tab:blue", "tab:green", "tab:purple"), strict=False):
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], "o-", color=color, label=f"{mode} (measured)")
        if all(p[2] for p in points):
            ax.plot(xs, [p[2] for p in points], "--", color=color, alpha=0.6, label=f"{mode} (analytic)")
    ax.axhline(base, color="black", lw=1, label="target only")
    ax.axhline(hf, color="tab:red", lw=1, ls=":", label="HF assisted (same pair, RTT 0)")
    ax.set_xlabel("emulated round-trip time draft <-> target (ms)")
    ax.set_ylabel("tokens/s (one request)")
    ax.set_xticks(rtts)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
