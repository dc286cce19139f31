"""Losslessness in low precision: batched and one-sequence forwards round differently, so a bfloat16 target may
break a near-tie differently when batched. Such an output must still agree with the target alone up to a token
whose two best logits were within the dtype's rounding; `first_divergence` tells that apart from a real bug."""

from __future__ import annotations

import pytest
import torch

from dsd_runtime.common import models
from dsd_runtime.common.divergence import first_divergence, rounding_tolerance
from dsd_runtime.common.lm import ForwardItem
from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.drafting import DraftingState
from dsd_runtime.draft.speculating import GenerationRequest, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from tests.lossless.test_greedy_equals_target_alone import PROMPTS, target_alone
from tests.support.runtime_fixtures import start_target
from tests.support.threads import results

N = 20


@pytest.fixture(scope="module")
def bf16_target(tiny_models) -> models.LoadedModel:
    return models.load(str(tiny_models["target"]), dtype=torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_and_one_sequence_logits_differ_by_less_than_the_rounding_bound(tiny_models, dtype):
    target = models.load(str(tiny_models["target"]), dtype=dtype)
    tok = target.tokenizer
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    seqs = [target.lm.new_sequence() for _ in prompts]
    packed = target.lm.forward_many([ForwardItem(s, p, 1) for s, p in zip(seqs, prompts, strict=True)])
    with torch.inference_mode():
        for ids, got in zip(prompts, packed, strict=True):
            alone = target.lm.model(torch.tensor([ids])).logits[0, -1].float()
            worst = float((alone - got[-1]).abs().max())
            assert worst <= rounding_tolerance(dtype, float(alone.abs().max()))


def test_a_token_that_is_not_the_runner_up_is_a_real_difference(loaded):
    target = loaded["target"]
    prompt = target.tokenizer("The quick brown fox")["input_ids"]
    want = target_alone(target, prompt, N)
    with torch.inference_mode():
        logits = target.lm.model(torch.tensor([prompt + want[:5]])).logits[0, -1]
    third = int(logits.argsort(descending=True)[2])
    wrong = [*want[:5], third, *want[6:]]
    d = first_divergence(target.lm.model, prompt, want, wrong)
    assert d is not None and d.index == 5 and d.got_rank == 2
    assert not d.within_rounding
    assert first_divergence(target.lm.model, prompt, want, want) is None
    assert first_divergence(target.lm.model, prompt, want, want[:7]) is None


def test_an_exact_tie_is_within_rounding(tiny_models):
    target = models.load(str(tiny_models["target"]))
    prompt = target.tokenizer("Once upon a time")["input_ids"]
    want = target_alone(target, prompt, N)
    first = want[3]
    head = target.lm.model.lm_head.weight
    twin = (first + 1) % head.shape[0]
    with torch.no_grad():
        head[twin] = head[first]  # two tokens with the same logits everywhere: a tie no dtype can break
    want = target_alone(target, prompt, N)
    j = next(i for i, t in enumerate(want) if t in (first, twin))
    other = twin if want[j] == first else first
    d = first_divergence(target.lm.model, prompt, want, [*want[:j], other, *want[j + 1:]])
    assert d is not None and d.index == j and d.gap == 0 and d.got_rank == 0 and d.within_rounding


def test_concurrent_bfloat16_sessions_equal_the_bfloat16_target_alone_up_to_rounding(bf16_target):
    server = start_target(bf16_target, max_batch_tokens=64)
    client = TargetClient(f"127.0.0.1:{server.port}")
    prompts = [bf16_target.tokenizer(p)["input_ids"] for p in PROMPTS]

    def run(i: int) -> list[int]:
        proposer = ["lookup", "none"][i % 2]
        spec = Speculator(None, client, WindowController(WindowConfig(gamma=3, proposer=proposer), has_model=False),
                          drafting=DraftingState(), max_context=512)
        return list(spec.generate(GenerationRequest(prompts[i], N)))

    try:
        outputs = results([lambda i=i: run(i) for i in range(len(prompts))])
        for i, prompt in enumerate(prompts):
            want = target_alone(bf16_target, prompt, N)
            d = first_divergence(bf16_target.lm.model, prompt, want, outputs[i])
            assert d is None or d.within_rounding, d.describe()
    finally:
        client.close()
        server.stop(0)
