"""What one packed forward pass of the target costs, by shape, through each of the runtime's CPU fixes.

    python bench/pass_bench.py            # SmolLM2-135M-Instruct, float32 and bfloat16, ~5 min on 2 cores
    python bench/pass_bench.py --quick    # fewer repeats

Shapes: k sessions x 1 token (a batched decode step, k = 1..16) and 1 session x n tokens (a verify window,
n = 1..17), every session 200 tokens into its context. Variants, interleaved in a random order within every
repeat so the machine's drift hits all alike:
  - before: SDPA's grouped-query path (it expands each KV head for its query heads, per session and layer),
    the vocabulary projection over exactly the rows wanted, linear layers through aten (MKL for float32);
  - grouped: the query heads sharing a KV head attend it as one block of rows, and a float32 projection of 2-3
    (6-7, 10-11) rows is padded to the next multiple of 4 (`dsd_runtime.common.lm`);
  - prepacked (the runtime's default): grouped, and the linear layers through oneDNN with weights reordered
    at load (`dsd_runtime.common.prepacked`; no padding: its cost hardly depends on the row count). bfloat16
    is packed only on CPUs with native bfloat16; elsewhere it equals grouped and is not run.
Medians over the repeats, each variant's ratio to before, and the largest logit difference from before
(rounding only: the same math in another order). Writes docs/benchmarks/passes.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import time
from pathlib import Path

import torch

from dsd_runtime.common import models, prepacked
from dsd_runtime.common.lm import CausalLM, ForwardItem

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "benchmarks"
CONTEXT = 200
SESSIONS = (1, 2, 3, 4, 6, 7, 8, 12, 16)
WINDOWS = (2, 3, 4, 5, 7, 9, 17)
VARIANTS = {"before": (False, True, False), "grouped": (False, False, True),  # (prepacked, expand_kv, pad)
            "prepacked": (True, False, False)}


def _items(seqs: list, kind: str, size: int) -> list[ForwardItem]:
    if kind == "sessions":
        return [ForwardItem(seqs[i], [5 + i], 1) for i in range(size)]
    return [ForwardItem(seqs[0], list(range(5, 5 + size)), size)]


def _run(lms: dict[bool, tuple[CausalLM, list]], kind: str, size: int, variant: str) -> tuple[float, torch.Tensor]:
    packed, expand_kv, pad = VARIANTS[variant]
    lm, seqs = lms[packed]
    lm.expand_kv, lm.pad_head_rows = expand_kv, pad
    items = _items(seqs, kind, size)
    start = time.perf_counter()
    logits = lm.forward_many(items)
    seconds = time.perf_counter() - start
    for it in items:
        lm.rollback(it.seq, len(it.token_ids))
    return seconds, torch.cat(logits)


def _loaded(dtype: torch.dtype, prepack: bool, context: list[int]) -> tuple[CausalLM, list]:
    lm = models.load(models.SMOLLM2_TARGET, dtype=dtype, prepack=prepack).lm
    assert lm is not None
    seqs = []
    for _ in range(max(SESSIONS)):
        seq = lm.new_sequence()
        lm.forward(seq, context, keep_last=1)
        seqs.append(seq)
    return lm, seqs


def measure(dtype: str, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    context = [int(t) for t in torch.randint(100, 20_000, (CONTEXT,))]
    lms = {False: _loaded(models.DTYPES[dtype], False, context)}
    variants = ["before", "grouped"]
    if prepacked.supported(lms[False][0].dtype, lms[False][0].device):
        lms[True] = _loaded(models.DTYPES[dtype], True, context)
        variants.append("prepacked")
    shapes = [("sessions", k) for k in SESSIONS] + [("window", n) for n in WINDOWS]
    times: dict[tuple[str, int, str], list[float]] = {}
    diff: dict[tuple[str, int, str], float] = {}
    rng = random.Random(0)
    with torch.inference_mode():
        for r in range(repeats + 2):  # the first two warm up
            order = [(shape, v) for shape in shapes for v in variants]
            rng.shuffle(order)
            for (kind, size), variant in order:
                seconds, _ = _run(lms, kind, size, variant)
                if r >= 2:
                    times.setdefault((kind, size, variant), []).append(seconds)
            if r == 0:
                for kind, size in shapes:
                    ref = _run(lms, kind, size, "before")[1]
                    for v in variants[1:]:
                        diff[kind, size, v] = float((_run(lms, kind, size, v)[1] - ref).abs().max())
    rows = []
    for kind, size in shapes:
        ms = {v: 1000 * statistics.median(times[kind, size, v]) for v in variants}
        row = {"dtype": dtype, "shape": kind, "size": size}
        for v in variants:
            row[f"{v}_ms"] = round(ms[v], 2)
        for v in ("grouped", "prepacked"):
            row[f"{v}_speedup"] = round(ms["before"] / ms[v], 3) if v in ms else ""
            row[f"{v}_max_logit_diff"] = diff.get((kind, size, v), "")
        rows.append(row)
    return rows


def write(rows: list[dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with (OUT / "passes.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"SmolLM2-135M-Instruct, {torch.get_num_threads()} threads, every session {CONTEXT} tokens into its "
             "context; median ms per pass (`python bench/pass_bench.py`).", "",
             "| dtype | shape | before | grouped | prepacked | before / grouped | before / prepacked | "
             "max logit difference from before (grouped, prepacked) |", "|---" * 8 + "|"]
    for r in rows:
        shape = (f"{r['size']} session{'s' * (r['size'] > 1)} x 1 token" if r["shape"] == "sessions"
                 else f"1 session x {r['size']} tokens")
        packed = bool(r.get("prepacked_ms"))
        p_ms = f"{r['prepacked_ms']:.1f}" if packed else "-"
        p_x = f"{r['prepacked_speedup']:.2f}x" if packed else "-"
        p_diff = f"{r['prepacked_max_logit_diff']:.1e}" if packed else "-"
        lines.append(f"| {r['dtype']} | {shape} | {r['before_ms']:.1f} | {r['grouped_ms']:.1f} | {p_ms} | "
                     f"{r['grouped_speedup']:.2f}x | {p_x} | {r['grouped_max_logit_diff']:.1e}, {p_diff} |")
    text = "\n".join(lines)
    (OUT / "passes.md").write_text(text + "\n")
    print(text)
    _plot(rows)


def _plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, kind, label in ((axes[0], "sessions", "sessions x 1 token"), (axes[1], "window", "tokens, 1 session")):
        for dtype in dtypes:
            sel = [r for r in rows if r["dtype"] == dtype and r["shape"] == kind]
            for variant, style in (("before", ":"), ("grouped", "--"), ("prepacked", "-")):
                if sel and sel[0].get(f"{variant}_ms"):
                    ax.plot([r["size"] for r in sel], [r[f"{variant}_ms"] for r in sel], style, marker="o",
                            label=f"{dtype} {variant}")
        ax.set_xlabel(label)
        ax.set_ylabel("ms per pass")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "passes.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 10")
    parser.add_argument("--dtype", action="append", choices=["float32", "bfloat16"],
                        help="repeatable; default both")
    args = parser.parse_args()
    rows = [row for dtype in (args.dtype or ["float32", "bfloat16"])
            for row in measure(dtype, 3 if args.quick else 10)]
    write(rows)


if __name__ == "__main__":
    main()
