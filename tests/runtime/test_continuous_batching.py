"""Continuous batching on a real (tiny, float64) model: a packed pass equals each sequence run alone, concurrent
callers get what they would get alone, long prefills are chunked, and a failed pass changes no sequence."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from dsd_runtime.common.batching import BatchingLM
from dsd_runtime.common.lm import CausalLM, ForwardItem, head_rows


def _full_logits(lm, ids: list[int]) -> torch.Tensor:
    """The model over the whole sequence at once, no cache: the reference."""
    with torch.no_grad():
        return lm.model(torch.tensor([ids])).logits[0].double()


def test_a_packed_pass_equals_each_sequence_alone(loaded):
    lm = loaded["target"].lm
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (3, 11, 7)]
    seqs = [lm.new_sequence() for _ in prompts]
    first = lm.forward_many([ForwardItem(s, p, 2) for s, p in zip(seqs, prompts, strict=True)])
    windows = [[5], [1, 2, 3], [9, 8, 7, 6]]
    second = lm.forward_many([ForwardItem(s, w, len(w)) for s, w in zip(seqs, windows, strict=True)])
    for p, w, a, b in zip(prompts, windows, first, second, strict=True):
        ref = _full_logits(lm, p + w)
        assert torch.allclose(a.double(), ref[len(p) - 2: len(p)], atol=1e-10)
        assert torch.allclose(b.double(), ref[len(p):], atol=1e-10)
    lm.rollback(seqs[2], 3)  # keep 9; then a different continuation
    got = lm.forward(seqs[2], [4, 4], keep_last=2)
    assert torch.allclose(got.double(), _full_logits(lm, prompts[2] + [9, 4, 4])[-2:], atol=1e-10)
    with pytest.raises(ValueError, match="twice"):
        lm.forward_many([ForwardItem(seqs[0], [1], 1), ForwardItem(seqs[0], [2], 1)])


def _decode(batcher: BatchingLM, prompt: list[int], n: int) -> list[int]:
    seq = batcher.new_sequence()
    logits = batcher.forward(seq, prompt, keep_last=1)[-1]
    out = []
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = batcher.forward(seq, [out[-1]])[-1]
    return out


@pytest.mark.parametrize("max_batch_tokens", [4, 1024])  # 4: every prompt is prefilled in chunks
def test_concurrent_callers_get_what_they_would_get_alone(loaded, max_batch_tokens):
    lm = loaded["target"].lm
    passes: list[tuple[int, int]] = []
    batcher = BatchingLM(lm, max_batch_tokens, on_pass=lambda seqs, toks, _s: passes.append((seqs, toks)))
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (5, 17, 9, 30, 2, 12)]
    results: dict[int, list[int]] = {}
    start = threading.Barrier(len(prompts))

    def run(i: int) -> None:
        start.wait()
        results[i] = _decode(batcher, prompts[i], 20)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    for i, p in enumerate(prompts):
        assert results[i] == lm.greedy(p, 20)
    assert max(s for s, _ in passes) > 1  # passes were shared
    assert max(t for _, t in passes) <= max_batch_tokens


def test_a_failed_pass_leaves_every_sequence_as_it_was(loaded):
    lm = loaded["target"].lm
    batcher = BatchingLM(lm, max_batch_tokens=4)
    seq = batcher.new_sequence()
    batcher.forward(seq, [1, 2, 3], keep_last=1)
    calls = {"n": 0}
    real = lm.forward_many

    def fail_on_second_chunk(items):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return real(items)

    lm.forward_many = fail_on_second_chunk
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            batcher.forward(seq, list(range(10, 20)), keep_last=1)  # chunks of 4: the second one fails
    finally:
        del lm.forward_many
        batcher.close()
    assert seq.length == 3
    assert torch.allclose(lm.forward(seq, [4], 1).double(), _full_logits(lm, [1, 2, 3, 4])[-1:], atol=1e-10)


@pytest.mark.parametrize(("rows", "dtype", "device", "padded"), [
    (1, torch.float32, "cpu", 1), (2, torch.float32, "cpu", 4), (3, torch.float32, "cpu", 4),
    (4, torch.float32, "cpu", 4), (5, torch.float32, "cpu", 5), (6, torch.float32, "cpu", 8),
    (7, torch.float32, "cpu", 8), (11, torch.float32, "cpu", 12), (13, torch.float32, "cpu", 13),
    (14, torch.float32, "cpu", 14), (3, torch.bfloat16, "cpu", 3), (3, torch.float64, "cpu", 3),
    (3, torch.float32, "cuda", 3),
])
def test_head_rows_pads_only_the_slow_fp32_cpu_row_counts(rows, dtype, device, padded):
    assert head_rows(rows, dtype, torch.device(device)) == padded


def test_fp32_padded_head_rows_and_grouped_attention_change_no_logit(loaded):
    """float32 (where rows are padded) and the grouped-query path against SDPA's own: same logits, in rounding."""
    model = copy.deepcopy(loaded["target"].lm.model).float()
    lm = CausalLM(model, "fp32")
    assert model.config.num_attention_heads != model.config.num_key_value_heads  # the grouped path is taken
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (6, 9, 4)]
    windows = [[3, 1, 4], [1], [5, 9]]  # 6 rows kept: padded to 8

    def run(pad: bool, expand: bool) -> list[torch.Tensor]:
        lm.pad_head_rows, lm.expand_kv = pad, expand
        seqs = [lm.new_sequence() for _ in prompts]
        lm.forward_many([ForwardItem(s, p, 1) for s, p in zip(seqs, prompts, strict=True)])
        return lm.forward_many([ForwardItem(s, w, len(w)) for s, w in zip(seqs, windows, strict=True)])

    plain, tuned = run(False, True), run(True, False)
    for p, w, a, b in zip(prompts, windows, plain, tuned, strict=True):
        assert a.shape == b.shape == (len(w), lm.vocab_size)
        assert torch.allclose(a, b, atol=1e-5)
        ref = _full_logits(lm, p + w)[len(p):].float()
        assert torch.allclose(b, ref, atol=1e-4)
