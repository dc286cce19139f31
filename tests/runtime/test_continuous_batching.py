"""Continuous batching on a real (tiny, float64) model: a packed pass equals each sequence run alone, concurrent
callers get what they would get alone, long prefills are chunked, a failed pass changes no sequence, calls may
finish out of queue order, and a failing worker fails every call instead of leaving one waiting."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from dsd_runtime.common.batching import BatcherStopped, BatchingLM
from dsd_runtime.common.lm import CausalLM, ForwardItem, head_rows
from tests.support.threads import outcomes, results
from tests.support.waiting import wait_for


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
    try:
        decoded = results([lambda p=p: _decode(batcher, p, 20) for p in prompts])
    finally:
        batcher.close()
    for p, got in zip(prompts, decoded, strict=True):
        assert got == lm.greedy(p, 20)
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


def test_a_call_that_finishes_before_an_earlier_chunked_one_is_answered(loaded):
    """A short call packed behind the chunk of a long one finishes first and leaves the queue out of order (the
    removal compared calls by value, hence their KV tensors, and killed the worker: CI hung on it)."""
    lm = loaded["target"].lm
    batcher = BatchingLM(lm, max_batch_tokens=16)
    long_seq, short_seq, blocker = batcher.new_sequence(), batcher.new_sequence(), batcher.new_sequence()
    batcher.forward(long_seq, [1, 2, 3], keep_last=1)  # both hold KV in every layer, as live sessions do
    batcher.forward(short_seq, [4, 5], keep_last=1)
    gate, entered = threading.Event(), threading.Event()
    real = lm.forward_many

    def first_pass_waits(items):
        if not entered.is_set():
            entered.set()
            gate.wait(30)
        return real(items)

    long_window = list(range(20, 37))  # 17 tokens keeping the last 8: a chunk of 9, then 8 (budget 16)
    lm.forward_many = first_pass_waits
    try:
        def queue_both_then_open() -> None:
            assert entered.wait(30)
            wait_for(lambda: len(batcher._queue) == 3, 30, "both calls queued behind the held pass", 0.01)
            gate.set()

        held, long_logits, short_logits, _ = outcomes([
            lambda: batcher.forward(blocker, [9], keep_last=1),
            lambda: (entered.wait(30), batcher.forward(long_seq, long_window, keep_last=8))[1],
            lambda: (wait_for(lambda: len(batcher._queue) == 2, 30, "the long call queued", 0.01),
                     batcher.forward(short_seq, [6], keep_last=1))[1],
            queue_both_then_open], timeout_s=60)
    finally:
        del lm.forward_many
        batcher.close()
    for got in (held, long_logits, short_logits):
        assert isinstance(got, torch.Tensor), got
    assert torch.allclose(long_logits.double(), _full_logits(lm, [1, 2, 3, *long_window])[-8:], atol=1e-10)
    assert torch.allclose(short_logits.double(), _full_logits(lm, [4, 5, 6])[-1:], atol=1e-10)


def test_close_waits_for_the_worker(loaded):
    """A worker left running after close() frees its last pass's tensors while the interpreter finalises, which
    aborted `dsd generate` at exit (SIGABRT, "terminate called without an active exception")."""
    batcher = BatchingLM(loaded["target"].lm)
    batcher.forward(batcher.new_sequence(), [1, 2, 3], keep_last=1)
    batcher.close()
    assert batcher.stopped
    with pytest.raises(BatcherStopped):
        batcher.forward(batcher.new_sequence(), [1], keep_last=1)


def test_close_lets_the_running_pass_finish_first(loaded, held_model):
    lm = loaded["target"].lm
    batcher = BatchingLM(lm)
    gate, entered = held_model

    def close_while_the_pass_runs() -> bool:
        assert entered.wait(30)
        stopped_on_return: list[bool] = []
        closer = threading.Thread(target=lambda: (batcher.close(), stopped_on_return.append(batcher.stopped)),
                                  daemon=True)
        closer.start()
        wait_for(lambda: batcher.closed, 30, "close() to begin while the pass is held")
        if batcher.stopped:  # the worker must still be in its held pass
            return False
        gate.set()  # close() may return only once that pass has ended and the worker has exited
        closer.join(30)
        return stopped_on_return == [True]

    logits, stopped_when_close_returned = results(
        [lambda: batcher.forward(batcher.new_sequence(), [4, 5], keep_last=1), close_while_the_pass_runs],
        timeout_s=60)
    assert stopped_when_close_returned
    assert torch.allclose(logits.double(), _full_logits(lm, [4, 5])[-1:], atol=1e-10)


def test_a_failing_worker_fails_every_waiting_and_later_call(loaded):
    failures: list[BaseException] = []

    def observer_bug(_seqs, _tokens, _s):
        raise KeyError("observer bug")

    batcher = BatchingLM(loaded["target"].lm, on_pass=observer_bug, on_failure=failures.append)
    with pytest.raises(BatcherStopped, match="internal error: KeyError") as err:
        batcher.forward(batcher.new_sequence(), [1, 2], keep_last=1)
    assert isinstance(err.value.__cause__, KeyError)
    assert [type(f) for f in failures] == [KeyError]
    assert isinstance(batcher.failure, KeyError)
    with pytest.raises(BatcherStopped, match="observer bug"):  # refused at once, never queued
        batcher.forward(batcher.new_sequence(), [3], keep_last=1)


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
