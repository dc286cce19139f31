"""Why the packed layout: one packed forward over B sessions vs B one-session forwards, and the packed path
for one session vs transformers' own DynamicCache + SDPA, side by side in one process.

    python bench/packing_bench.py            # SmolLM2-135M, float32, 2 threads, 200-token contexts (~3 min)

Each figure is the median of 5 timed repetitions after one warm-up; windows are rolled back after each run, so
every repetition sees the same context. Prints a table and writes docs/benchmarks/packing.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import DynamicCache

from dsd_runtime.common import models
from dsd_runtime.common.lm import ForwardItem

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "packing.md"


def median_ms(fn: Callable[[], None], reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    lm = models.load(models.SMOLLM2_TARGET, torch.float32).lm
    gen = torch.Generator().manual_seed(0)
    contexts = [torch.randint(0, lm.vocab_size, (200,), generator=gen).tolist() for _ in range(32)]
    seqs = [lm.new_sequence() for _ in contexts]
    lm.forward_many([ForwardItem(s, c, 1) for s, c in zip(seqs, contexts, strict=True)])
    lines = ["| window | transformers DynamicCache + SDPA, 1 session | packed, 1 session | ratio |",
             "|---|---|---|---|"]
    model = lm.model
    for w in (1, 5, 17):
        cache = DynamicCache()
        with torch.inference_mode():
            model.config._attn_implementation = "sdpa"
            model(torch.tensor([contexts[0]]), cache=cache, use_cache=True)

            def hf(w: int = w, cache: DynamicCache = cache) -> None:
                model(torch.tensor([[7] * w]), cache=cache, use_cache=True, logits_to_keep=w)
                cache.crop(-w)

            reference = median_ms(hf)
            model.config._attn_implementation = "dsd_packed"

        def packed(w: int = w) -> None:
            lm.forward(seqs[0], [7] * w, w)
            lm.rollback(seqs[0], w)

        ours = median_ms(packed)
        lines.append(f"| {w} | {reference:.1f} ms | {ours:.1f} ms | {reference / ours:.2f}x |")
    lines += ["", "| sessions x window | B one-session forwards | one packed forward | speedup |", "|---|---|---|---|"]
    for b in (4, 8, 16, 32):
        for w in (1, 5):
            def one_by_one(b: int = b, w: int = w) -> None:
                for s in seqs[:b]:
                    lm.forward(s, [7] * w, w)
                    lm.rollback(s, w)

            def together(b: int = b, w: int = w) -> None:
                lm.forward_many([ForwardItem(s, [7] * w, w) for s in seqs[:b]])
                for s in seqs[:b]:
                    lm.rollback(s, w)

            a, c = median_ms(one_by_one), median_ms(together)
            lines.append(f"| {b} x {w} | {a:.0f} ms | {c:.0f} ms | {a / c:.2f}x |")
    text = "\n".join(lines)
    OUT.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
