"""What one packed forward pass of the target costs, by shape, through each of the runtime's CPU fixes.

    python bench/pass_bench.py            # SmolLM2-135M-Instruct, float32 and bfloat16, ~5 min on 2 cores
    python bench/pass_bench.py --quick    # fewer repeats
    python bench/pass_bench.py --threads 1 --dtype float32 --out DIR   # as the drafting benchmark runs

Shapes: k sessions x 1 token (a batched decode step, k = 1..16) and 1 session x n tokens (a verify window,
n = 1..17), every session 200 tokens into its context. Variants, interleaved in a random order within every
repeat so the machine's drift hits all alike:
  - before: SDPA's grouped-query path (it expands each KV head for its query heads, per session and layer),
    the vocabulary projection over exactly the rows wanted, linear layers through aten (MKL for float32);
  - grouped: the query heads sharing a KV head attend it as one block of rows, and a float32 projection of 2-3
    (6-7, 10-11) rows is padded to the next multiple of 4 (`dsd_runtime.common.lm`);
  - prepacked, 1 plain row (float32; the runtime's dispatch until 2026-12-07): grouped, and the linear layers
    through oneDNN with weights reordered at load (`dsd_runtime.common.prepacked`; no padding: its cost hardly
    depends on the row count), one-row inputs of the decoder layers through aten;
  - prepacked (the runtime's default): the same, with the rows up to which aten is faster measured per layer
    shape at load (float32; `prepacked.plain_rows_for`). bfloat16 is packed only on CPUs with native
    bfloat16 (elsewhere it equals grouped and is not run), and never through aten.
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
# variant -> (how the model is loaded, expand_kv, pad); a load: None = not packed, else prepack's plain_rows
# (-1: measured at load, the runtime's default)
VARIANTS: dict[str, tuple[int | None, bool, bool]] = {
    "before": (None, True, False), "grouped": (None, False, True), "prepacked, 1 plain row": (1, False, False),
    "prepacked": (-1, False, False)}


def _items(seqs: list, kind: str, size: int) -> list[ForwardItem]:
    if kind == "sessions":
        return [ForwardItem(seqs[i], [5 + i], 1) for i in range(size)]
    return [ForwardItem(seqs[0], list(range(5, 5 + size)), size)]


def _run(lms: dict[int | None, tuple[CausalLM, list]], kind: str, size: int, variant: str
         ) -> tuple[float, torch.Tensor]:
    load, expand_kv, pad = VARIANTS[variant]
    lm, seqs = lms[load]
    lm.expand_kv, lm.pad_head_rows = expand_kv, pad
    items = _items(seqs, kind, size)
    start = time.perf_counter()
    logits = lm.forward_many(items)
    seconds = time.perf_counter() - start
    for it in items:
        lm.rollback(it.seq, len(it.token_ids))
    return seconds, torch.cat(logits)


def _loaded(dtype: torch.dtype, load: int | None, context: list[int]) -> tuple[CausalLM, list]:
    lm = models.load(models.SMOLLM2_TARGET, dtype=dtype, prepack=load is not None,
                     plain_rows=None if load is None or load < 0 else load).lm
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
    lms: dict[int | None, tuple[CausalLM, list]] = {None: _loaded(models.DTYPES[dtype], None, context)}
    variants = ["before", "grouped"]
    plain = lms[None][0]
    if prepacked.supported(plain.dtype, plain.device):
        packed = ["prepacked, 1 plain row", "prepacked"] if dtype == "float32" else ["prepacked"]
        for v in packed:
            lms[VARIANTS[v][0]] = _loaded(models.DTYPES[dtype], VARIANTS[v][0], context)
        variants += packed
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
        row: dict = {"dtype": dtype, "shape": kind, "size": size}
        for v in variants:
            row[f"{v}_ms"] = round(ms[v], 2)
        for v in variants[1:]:
            row[f"{v}_speedup"] = round(ms["before"] / ms[v], 3)
            row[f"{v}_max_logit_diff"] = diff.get((kind, size, v), "")
        rows.append(row)
    return rows


def write(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with (out / "passes.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    others = [v for v in VARIANTS if v != "before"]
    lines = [f"SmolLM2-135M-Instruct, {torch.get_num_threads()} threads, every session {CONTEXT} tokens into its "
             "context; median ms per pass (`python bench/pass_bench.py`); '-': not run for that dtype.", "",
             "| dtype | shape | " + " | ".join(VARIANTS) + " | " + " | ".join(f"before / {v}" for v in others)
             + " | max logit difference from before (" + ", ".join(others) + ") |",
             "|---" * (3 + 2 * len(others) + 1) + "|"]

    def cell(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if r.get(key, "") != "" else "-"

    for r in rows:
        shape = (f"{r['size']} session{'s' * (r['size'] > 1)} x 1 token" if r["shape"] == "sessions"
                 else f"1 session x {r['size']} tokens")
        lines.append(f"| {r['dtype']} | {shape} | " + " | ".join(cell(r, f"{v}_ms", ".1f") for v in VARIANTS)
                     + " | " + " | ".join(cell(r, f"{v}_speedup", ".2f") + "x" * (f"{v}_speedup" in r)
                                          for v in others)
                     + " | " + ", ".join(cell(r, f"{v}_max_logit_diff", ".1e") for v in others) + " |")
    text = "\n".join(lines)
    (out / "passes.md").write_text(text + "\n")
    print(text)
    _plot(rows, out)


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, kind, label in ((axes[0], "sessions", "sessions x 1 token"), (axes[1], "window", "tokens, 1 session")):
        for dtype in dtypes:
            sel = [r for r in rows if r["dtype"] == dtype and r["shape"] == kind]
            for variant, style in zip(VARIANTS, (":", "--", "-.", "-"), strict=True):
                if sel and sel[0].get(f"{variant}_ms"):
                    ax.plot([r["size"] for r in sel], [r[f"{variant}_ms"] for r in sel], style, marker="o",
                            label=f"{dtype} {variant}")
        ax.set_xlabel(label)
        ax.set_ylabel("ms per pass")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "passes.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 10")
    parser.add_argument("--dtype", action="append", choices=["float32", "bfloat16"],
                        help="repeatable; default both")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [row for dtype in (args.dtype or ["float32", "bfloat16"])
            for row in measure(dtype, 3 if args.quick else 10)]
    write(rows, args.out)


if __name__ == "__main__":
    main()
