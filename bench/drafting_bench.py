"""Drafting benchmark: which proposer pays on which workload, side by side in one run.

    python bench/drafting_bench.py                 # SmolLM2-135M-Instruct, fp32 and bf16, RTT 0/5/20 ms
    python bench/drafting_bench.py --quick         # 1 prompt per workload, bf16, RTT 0 and 20 ms
    python bench/drafting_bench.py --dtypes float32 --compare-gamma-max 8 --out DIR   # + the hybrid capped at 8
    python bench/drafting_bench.py --dtypes float32 --compare-plain-rows 1 --out DIR  # + a target with 1 aten row

Workloads (prompts written for this benchmark, in no training set): open chat; summarising a given text;
answering by quoting a given text (extraction / RAG); editing given code. Modes: the target alone (HF
generate), Hugging Face prompt lookup (`prompt_lookup_num_tokens`), and DSD with each model-free proposer
(n-gram lookup, suffix, hybrid; no draft model, so nothing needs training) at each emulated RTT.
Setup as bench/runtime_bench.py: one torch thread per process, the DSD target a separate `dsd target`
process, the draft here, RTT emulated on the link; each prompt runs every mode back to back. Target-only
streams draft for themselves from their own request (the target's cross-request cache is off: it would hold
the answer of the mode before). Each draft engine's own cache learns from the earlier prompts only. Every DSD output
is compared token for token with the target alone in the same dtype; a mismatch is reported with the gap
between the target's two top logits where the texts part (batched and single-token forwards round
differently in bf16). `--compare-plain-rows N` adds the hybrid against a second target whose float32 layers
send N rows through aten (N = 1: the dispatch before rows were measured at load). Writes
docs/benchmarks/drafting.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_bench import REPO, Run, _hf_generate, _start_target

from dsd_runtime import profiling
from dsd_runtime.common import models, prepacked
from dsd_runtime.draft.client import LinkEmulation
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats
from dsd_runtime.draft.windowing import WindowConfig
from dsd_spec.sampling import SamplingParams

PARAGRAPH = (
    "The harbour town of Elmsworth was founded in 1742 by fishermen who traded salted cod with inland "
    "markets. In 1891 a railway line reached the town, and within a decade the population tripled. The old "
    "fish market was turned into a library in 1958, and today the town is known for its autumn lantern "
    "festival, which draws visitors from across the region."
)
CODE = (
    "def average(values):\n    total = 0\n    for v in values:\n        total = total + v\n"
    "    return total / len(values)\n\n\ndef largest(values):\n    best = values[0]\n    for v in values:\n"
    "        if v > best:\n            best = v\n    return best\n"
)
WORKLOADS = {
    "open chat": ["What are some fun things to do on a rainy afternoon?",
                  "Give me three tips for keeping a small garden healthy."],
    "summarise": [f"Summarise this paragraph in two sentences:\n\n{PARAGRAPH}",
                  f"Rewrite this paragraph as a short list of facts:\n\n{PARAGRAPH}"],
    "quote (RAG)": [f"Text:\n{PARAGRAPH}\n\nQuoting the text, when did the railway reach the town and what "
                    "happened to the old fish market?",
                    f"Text:\n{PARAGRAPH}\n\nCopy the sentence of the text that mentions the festival."],
    "edit code": [f"Add a docstring to each function and rename `v` to `value`:\n\n{CODE}",
                  f"Rewrite these functions with type hints:\n\n{CODE}"],
}
PROPOSERS = ("lookup", "suffix", "hybrid")


def _hf_lookup(target: models.LoadedModel, prompt: list[int], max_tokens: int) -> tuple[list[int], Run]:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.inference_mode():
        out = target.lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                       do_sample=False, prompt_lookup_num_tokens=4,
                                       pad_token_id=target.tokenizer.eos_token_id)
    new = out[0, len(prompt):].tolist()
    return new, Run(len(new), time.perf_counter() - start, 0.0)


def _dsd(engine: DraftEngine, prompt: list[int], max_tokens: int, eos: frozenset[int]) -> tuple[list[int], Run]:
    stats = GenerationStats()
    req = GenerationRequest(prompt, max_tokens, SamplingParams(temperature=0.0), 0, eos)
    start = time.perf_counter()
    out = list(engine.speculator.generate(req, None, stats))
    engine.drafting.cache.add(prompt + out)
    return out, Run(len(out), time.perf_counter() - start, 0.0, stats)


def _gap(target: models.LoadedModel, prompt: list[int], a: list[int], b: list[int]) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    with torch.inference_mode():
        logits = target.lm.model(torch.tensor([prompt + a[:i]])).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    return f"token {i}: top-2 logit gap {float(top[0] - top[1]):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=models.SMOLLM2_TARGET)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rtts-ms", default="0,5,20")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--prompts", type=int, default=2, help="per workload")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every prompt through every mode, each "
                        "with fresh draft engines; tokens/s over all of them, every output checked")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks")
    parser.add_argument("--compare-gamma-max", type=int, default=0, help="also run the hybrid with this "
                        "--gamma-max (its default is WindowConfig's), interleaved with the others")
    parser.add_argument("--compare-plain-rows", type=int, default=-1, help="also run the hybrid against a second "
                        "target whose float32 layers send this many rows through aten ($DSD_FLOAT32_PLAIN_ROWS; "
                        "the default target measures it at load), interleaved with the others")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.rtts_ms, args.dtypes = 1, "0,20", "bfloat16"
    rtts = [float(x) for x in args.rtts_ms.split(",")]
    torch.set_num_threads(1)
    rows: dict[tuple[str, str, str, float], list[Run]] = defaultdict(list)
    notes: list[str] = []
    modes = {f"DSD {p}": WindowConfig(proposer=p) for p in PROPOSERS}
    if args.compare_gamma_max:
        modes[f"DSD hybrid, gamma_max {args.compare_gamma_max}"] = WindowConfig(
            proposer="hybrid", gamma_max=args.compare_gamma_max)
    for dtype in args.dtypes.split(","):
        target = models.load(args.target, models.DTYPES[dtype])
        tokenizer_only = models.load_tokenizer(args.target)
        # Each prompt runs through every mode back to back: a cross-request cache on the target would hand
        # every run after the first its answer, so target-only streams self-draft from their own request only.
        proc, address = _start_target(args.target, dtype, "--self-drafting-cache-tokens", "0")
        procs, addresses = [proc], dict.fromkeys(modes, address)
        if args.compare_plain_rows >= 0 and dtype == "float32":
            mode = f"DSD hybrid, {args.compare_plain_rows} aten rows"
            other, addresses[mode] = _start_target(args.target, dtype, "--self-drafting-cache-tokens", "0",
                                                   env={prepacked.PLAIN_ROWS_ENV: str(args.compare_plain_rows)})
            procs.append(other)
        configs = {**modes, **{m: WindowConfig(proposer="hybrid") for m in addresses if m not in modes}}
        try:
            for repeat in range(args.repeats):
                # Fresh engines every repeat: a draft's cross-request cache must not hold the answers it is about
                # to be asked for again (the targets' self-drafting calibration carries over, as in a server).
                engines = {(mode, rtt): DraftEngine(tokenizer_only, addresses[mode], config,
                                                    LinkEmulation(one_way_delay_ms=rtt / 2))
                           for mode, config in configs.items() for rtt in rtts}
                try:
                    _one_repeat(args, target, engines, configs, rtts, dtype, rows, notes, repeat)
                finally:
                    for e in engines.values():
                        e.close()
        finally:
            for p in procs:
                p.terminate()
                p.wait()
    _report(rows, notes, args)


def _one_repeat(args: argparse.Namespace, target: models.LoadedModel, engines: dict[tuple[str, float], DraftEngine],
                configs: dict[str, WindowConfig], rtts: list[float], dtype: str,
                rows: dict[tuple[str, str, str, float], list[Run]], notes: list[str], repeat: int) -> None:
    """Every prompt of every workload through every mode, back to back; appends to `rows` and `notes`."""
    for e in engines.values():
        e.connect(timeout_s=300)
    eos = next(iter(engines.values())).eos_token_ids
    # Warm-up of every path (first forwards pick kernels), on a prompt outside the workloads.
    warm = profiling.chat_prompt_ids(target, "Say hello.")
    if repeat == 0:
        _hf_generate(target, warm, 8, None)
        _hf_lookup(target, warm, 8)
    for e in engines.values():
        _dsd(e, warm, 8, eos)
    for workload, texts in WORKLOADS.items():
        for text in texts[: args.prompts]:
            prompt = profiling.chat_prompt_ids(target, text)
            # Both outputs end with the EOS token when the answer ends before max_tokens.
            reference, run = _hf_generate(target, prompt, args.max_tokens, None)
            rows[(dtype, workload, "target alone (HF)", 0)].append(run)
            _, run = _hf_lookup(target, prompt, args.max_tokens)
            rows[(dtype, workload, "HF prompt lookup", 0)].append(run)
            for rtt in rtts:
                for mode in configs:
                    out, run = _dsd(engines[(mode, rtt)], prompt, args.max_tokens, eos)
                    if out != reference:
                        notes.append(f"{f'repeat {repeat}: ' if args.repeats > 1 else ''}{dtype} {workload} {mode} "
                                     f"RTT {rtt:g}: differs from the target "
                                     f"alone at {_gap(target, prompt, reference, out)}")
                    rows[(dtype, workload, mode, rtt)].append(run)
            print(f"{dtype} {workload}: done", file=sys.stderr, flush=True)


def _tps(runs: list[Run]) -> float:
    return sum(r.tokens for r in runs) / sum(r.seconds for r in runs)


def _report(rows: dict[tuple[str, str, str, float], list[Run]], notes: list[str], args: argparse.Namespace) -> None:
    table = []
    for (dtype, workload, mode, rtt), runs in rows.items():
        base = _tps(rows[(dtype, workload, "target alone (HF)", 0)])
        hf = _tps(rows[(dtype, workload, "HF prompt lookup", 0)])
        by_source: dict[str, int] = defaultdict(int)
        for r in runs:
            for k, v in (r.stats.tokens_by_source if r.stats else {}).items():
                by_source[k] += v
        drafted = sum(v for k, v in by_source.items() if k != "target")
        table.append({"dtype": dtype, "workload": workload, "mode": mode, "rtt_ms": rtt,
                      "tokens_per_s": round(_tps(runs), 2), "x_target": round(_tps(runs) / base, 3),
                      "x_hf_lookup": round(_tps(runs) / hf, 3),
                      "drafted_share": round(drafted / sum(by_source.values()), 3) if by_source else ""})
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "drafting.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    md = ["| dtype | workload | mode | RTT ms | tokens/s | x target alone | x HF prompt lookup | drafted share |",
          "|" + "---|" * 8]
    md += [f"| {r['dtype']} | {r['workload']} | {r['mode']} | {r['rtt_ms']:g} | {r['tokens_per_s']} | "
           f"{r['x_target']} | {r['x_hf_lookup']} | {r['drafted_share']} |" for r in table]
    md.append(f"\n{args.prompts} prompt(s) per workload x {args.repeats} repeat(s) x up to {args.max_tokens} greedy "
              "tokens; torch threads 1 per "
              f"process; {os.cpu_count()} CPUs. 'drafted share': output tokens that came from accepted drafts.")
    md.append("\nLossless check (every DSD output against the target alone in the same dtype): " +
              ("all identical." if not notes else f"{len(notes)} differ:\n" + "\n".join(f"- {n}" for n in notes)))
    (args.out / "drafting.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    _plot(table, args.out / "drafting.png")


def _plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = sorted({r["dtype"] for r in table})
    workloads = list(dict.fromkeys(r["workload"] for r in table))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.2), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        modes = [m for m in dict.fromkeys(r["mode"] for r in table) if m != "target alone (HF)"]
        series = [(m, rtt) for m in modes for rtt in sorted({r["rtt_ms"] for r in table if r["mode"] == m})]
        width = 0.8 / len(series)
        for j, (mode, rtt) in enumerate(series):
            ys = [next((r["x_target"] for r in table if r["dtype"] == dtype and r["workload"] == w
                        and r["mode"] == mode and r["rtt_ms"] == rtt), 0) for w in workloads]
            ax.bar([i + j * width for i in range(len(workloads))], ys, width,
                   label=mode if mode.startswith("HF") else f"{mode} RTT {rtt:g}")
        ax.axhline(1.0, color="black", lw=1)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))], workloads, fontsize=8)
        ax.set_ylabel("tokens/s relative to the target alone")
        ax.set_title(f"SmolLM2-135M-Instruct, {dtype}, 1 thread")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
