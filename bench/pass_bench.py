"""What one packed forward pass of the target costs, by shape, with and without the packing's two CPU fixes.

    python bench/pass_bench.py            # SmolLM2-135M-Instruct, float32 and bfloat16, ~3 min on 2 cores
    python bench/pass_bench.py --quick    # fewer repeats

Shapes: k sessions x 1 token (a batched decode step, k = 1..16) and 1 session x n tokens (a verify window,
n = 1..17), every session 200 tokens into its context. Variants, interleaved in a random order within every
repeat so the machine's drift hits both alike:
  - before: SDPA's grouped-query path (it expands each KV head for its query heads, per session and layer) and
    the vocabulary projection over exactly the rows wanted;
  - after (the runtime's default): the query heads sharing a KV head attend it as one block of rows, and a
    float32 projection of 2-3 (6-7, 10-11) rows is padded to the next multiple of 4 (`dsd_runtime.common.lm`).
Medians over the repeats, the ratio before / after, and the largest logit difference between the two (rounding
only: the same math in another order). Writes docs/benchmarks/passes.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import time
from pathlib import Path

import torch

from dsd_runtime.common import models
from dsd_runtime.common.lm import CausalLM, ForwardItem

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "benchmarks"
CONTEXT = 200
SESSIONS = (1, 2, 3, 4, 6, 7, 8, 12, 16)
WINDOWS = (2, 3, 4, 5, 7, 9, 17)
VARIANTS = {"before": (True, False), "after": (False, True)}  # (expand_kv, pad_head_rows)


def _items(seqs: list, kind: str, size: int) -> list[ForwardItem]:
    if kind == "sessions":
        return [ForwardItem(seqs[i], [5 + i], 1) for i in range(size)]
    return [ForwardItem(seqs[0], list(range(5, 5 + size)), size)]


def _run(lm: CausalLM, seqs: list, kind: str, size: int, variant: str) -> tuple[float, torch.Tensor]:
    lm.expand_kv, lm.pad_head_rows = VARIANTS[variant]
    items = _items(seqs, kind, size)
    start = time.perf_counter()
    logits = lm.forward_many(items)
    seconds = time.perf_counter() - start
    for it in items:
        lm.rollback(it.seq, len(it.token_ids))
    return seconds, torch.cat(logits)


def measure(dtype: str, repeats: int) -> list[dict]:
    lm = models.load(models.SMOLLM2_TARGET, dtype=models.DTYPES[dtype]).lm
    assert lm is not None
    torch.manual_seed(0)
    context = [int(t) for t in torch.randint(100, 20_000, (CONTEXT,))]
    seqs = []
    for _ in range(max(SESSIONS)):
        seq = lm.new_sequence()
        lm.forward(seq, context, keep_last=1)
        seqs.append(seq)
    shapes = [("sessions", k) for k in SESSIONS] + [("window", n) for n in WINDOWS]
    times: dict[tuple[str, int, str], list[float]] = {}
    diff: dict[tuple[str, int], float] = {}
    rng = random.Random(0)
    with torch.inference_mode():
        for r in range(repeats + 2):  # the first two warm up
            order = [(shape, v) for shape in shapes for v in VARIANTS]
            rng.shuffle(order)
            for (kind, size), variant in order:
                seconds, _ = _run(lm, seqs, kind, size, variant)
                if r >= 2:
                    times.setdefault((kind, size, variant), []).append(seconds)
            if r == 0:
                for kind, size in shapes:
                    a, b = (_run(lm, seqs, kind, size, v)[1] for v in VARIANTS)
                    diff[kind, size] = float((a - b).abs().max())
    rows = []
    for kind, size in shapes:
        before, after = (1000 * statistics.median(times[kind, size, v]) for v in VARIANTS)
        rows.append({"dtype": dtype, "shape": kind, "size": size, "before_ms": round(before, 2),
                     "after_ms": round(after, 2), "speedup": round(before / after, 3),
                     "max_logit_diff": diff[kind, size]})
    return rows


def write(rows: list[dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "passes.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"SmolLM2-135M-Instruct, {torch.get_num_threads()} threads, every session {CONTEXT} tokens into its "
             "context; median ms per pass (`python bench/pass_bench.py`).", "",
             "| dtype | shape | before | after | before / after | max logit difference |", "|---" * 6 + "|"]
    for r in rows:
        shape = (f"{r['size']} session{'s' * (r['size'] > 1)} x 1 token" if r["shape"] == "sessions"
                 else f"1 session x {r['size']} tokens")
        lines.append(f"| {r['dtype']} | {shape} | {r['before_ms']:.1f} | {r['after_ms']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['max_logit_diff']:.1e} |")
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
            for variant, style in (("before", "--"), ("after", "-")):
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
