"""Greedy DSD output equals the target model decoding alone (Hugging Face generate), token for token."""

from __future__ import annotations

import pytest
import torch

from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController

PROMPTS = ["Hello", "The quick brown fox", "def f(x):\n    return", "1 2 3 4", "Once upon a time, in a land",
           "zzz", "Q: What is DSD?\nA:", "édition ünïcode ✓"]


def target_alone(model, prompt_ids: list[int], n: int) -> list[int]:
    """Plain greedy decoding by the target alone: a full forward per token, no cache, no stop tokens."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model.lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def dsd_generate(loaded, draft: str, prompt_ids, n, port, config: WindowConfig) -> tuple[list[int], GenerationStats]:
    client = TargetClient(f"127.0.0.1:{port}")
    try:
        spec = Speculator(loaded[draft].lm, client, WindowController(config))
        stats = GenerationStats()
        return list(spec.generate(GenerationRequest(prompt_ids, n), stats=stats)), stats
    finally:
        client.close()


@pytest.mark.parametrize("draft", ["same", "partial", "random", "subset"])
@pytest.mark.parametrize("pipelined", [False, True])
def test_greedy_dsd_equals_target_alone(loaded, target_server, draft, pipelined):
    tok = loaded["target"].tokenizer
    accepted = 0
    for prompt in PROMPTS:
        ids = tok(prompt)["input_ids"]
        want = target_alone(loaded["target"], ids, 24)
        got, stats = dsd_generate(loaded, draft, ids, 24, target_server.port,
                                  WindowConfig(gamma=4, gamma_max=8, pipelined=pipelined))
        assert got == want, f"prompt {prompt!r}: DSD diverged from the target"
        accepted += stats.accepted
    if draft == "same":
        # nearly everything accepted (the first token comes from the prefill round, which proposes nothing)
        assert accepted > 0.95 * len(PROMPTS) * (24 - 1) * 4 / 5


def test_partial_draft_accepts_some_but_not_all(loaded, target_server):
    ids = loaded["target"].tokenizer("The quick brown fox")["input_ids"]
    _, stats = dsd_generate(loaded, "partial", ids, 48, target_server.port, WindowConfig(gamma=4))
    assert 0.05 < stats.acceptance < 0.95, stats


@pytest.mark.parametrize("gamma", [1, 2, 3, 7])
def test_window_sizes_and_adaptive_policy_keep_output(loaded, target_server, gamma):
    ids = loaded["target"].tokenizer("Once upon a time")["input_ids"]
    want = target_alone(loaded["target"], ids, 30)
    for policy in ("static", "adaptive"):
        got, _ = dsd_generate(loaded, "partial", ids, 30, target_server.port,
                              WindowConfig(gamma=gamma, gamma_max=max(gamma, 8), policy=policy))
        assert got == want
