"""Seeded sampling through DSD is the target's own seeded sampling, token for token, whatever the window.

The reference is a plain implementation of the target decoding alone: a full forward per token, the same warp,
and the per-position Gumbel noise of (seed, position). DSD must reproduce it exactly for every draft, window,
pipelining mode and adaptive policy; a different seed must give a different text (the check can fail).
"""

from __future__ import annotations

import pytest
import torch

from dsd_runtime.common import seeding
from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_spec import sampling
from dsd_spec.sampling import SamplingParams

PARAMS = SamplingParams(temperature=0.9, top_p=0.95)


def target_alone_sampled(model, prompt_ids: list[int], n: int, params: SamplingParams, seed: int) -> list[int]:
    ids = list(prompt_ids)
    vocab = model.lm.vocab_size
    with torch.no_grad():
        for _ in range(n):
            probs = sampling.warp(model.lm.model(torch.tensor([ids])).logits[0, -1], params)
            noise = seeding.gumbel_noise(seed, len(ids), 1, vocab)[0]
            ids.append(int((torch.log(probs.double()) + noise).argmax()))
    return ids[len(prompt_ids):]


def _dsd(loaded, draft, port, prompt, n, seed, config) -> tuple[list[int], GenerationStats]:
    client = TargetClient(f"127.0.0.1:{port}")
    try:
        stats = GenerationStats()
        spec = Speculator(loaded[draft].lm, client, WindowController(config))
        return list(spec.generate(GenerationRequest(prompt, n, PARAMS, seed=seed), stats=stats)), stats
    finally:
        client.close()


@pytest.mark.parametrize("draft", ["same", "partial", "random", "subset"])
def test_every_window_gives_the_target_alones_seeded_text(loaded, target_server, draft):
    prompt = loaded["target"].tokenizer("Once upon a time")["input_ids"]
    want = target_alone_sampled(loaded["target"], prompt, 24, PARAMS, seed=42)
    configs = [WindowConfig(gamma=g, pipelined=p) for g in (1, 3, 6) for p in (False, True)]
    configs.append(WindowConfig(gamma=4, gamma_min=1, gamma_max=8, policy="adaptive"))
    for config in configs:
        got, stats = _dsd(loaded, draft, target_server.port, prompt, 24, 42, config)
        assert got == want, (draft, config)
    if draft == "same":
        assert stats.acceptance == 1.0, "a draft equal to the target must agree on every coupled sample"
    other = target_alone_sampled(loaded["target"], prompt, 24, PARAMS, seed=43)
    assert other != want, "the seed must matter (else this test could not fail)"
