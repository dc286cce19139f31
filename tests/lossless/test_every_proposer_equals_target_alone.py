"""Greedy and seeded-sampling DSD equal the target alone for every proposer: model, n-gram lookup, suffix
(request + cross-request cache) and hybrid, with and without a draft model; every output token is attributed."""

from __future__ import annotations

import pytest

from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.drafting import DraftingState
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_spec.sampling import SamplingParams
from tests.lossless.test_greedy_equals_target_alone import PROMPTS, target_alone
from tests.lossless.test_seeded_sampling_is_window_invariant import target_alone_sampled

CASES = [("lookup", None), ("suffix", None), ("hybrid", None), ("hybrid", "partial"), ("hybrid", "random"),
         ("model", "partial")]


def _run(loaded, port, proposer, draft, prompts, n, params, seed=0, pipelined=False):
    client = TargetClient(f"127.0.0.1:{port}")
    state = DraftingState()
    window = WindowController(WindowConfig(gamma=3, gamma_max=8, policy="adaptive", proposer=proposer,
                                           pipelined=pipelined))
    spec = Speculator(loaded[draft].lm if draft else None, client, window, drafting=state, max_context=512)
    outs, stats = [], []
    try:
        for prompt in prompts:
            st = GenerationStats()
            outs.append(list(spec.generate(GenerationRequest(prompt, n, params, seed), stats=st)))
            state.cache.add(prompt + outs[-1])  # as the engine does after each request
            stats.append(st)
    finally:
        client.close()
    return outs, stats


@pytest.mark.parametrize(("proposer", "draft"), CASES)
@pytest.mark.parametrize("pipelined", [False, True])
def test_greedy_output_is_the_target_alones(loaded, target_server, proposer, draft, pipelined):
    tok = loaded["target"].tokenizer
    first = [tok(p)["input_ids"] for p in PROMPTS]
    # Second pass: each prompt continued by the first 8 tokens of its answer; the rest of that answer is in
    # the cross-request cache after a long match, so the suffix proposer must draft it.
    greedy = [target_alone(loaded["target"], p, 40) for p in first]
    second = [p + g[:8] for p, g in zip(first, greedy, strict=True)]
    outs, stats = _run(loaded, target_server.port, proposer, draft, first + second, 32, SamplingParams(),
                       pipelined=pipelined)
    for prompt, out, st in zip(first + second, outs, stats, strict=True):
        assert out == target_alone(loaded["target"], prompt, 32)
        assert sum(st.tokens_by_source.values()) == len(out), st.tokens_by_source
    if proposer in ("suffix", "hybrid"):
        from_cache = sum(s.tokens_by_source.get("suffix", 0) for s in stats[len(first):])
        assert from_cache >= 16 * len(second) // 2, "answers in the cache must be drafted from it"


@pytest.mark.parametrize(("proposer", "draft"), CASES)
def test_seeded_sampling_is_the_target_alones(loaded, target_server, proposer, draft):
    tok = loaded["target"].tokenizer
    params = SamplingParams(temperature=0.8, top_k=20)
    prompts = [tok(p)["input_ids"] for p in PROMPTS[:3]] * 2
    outs, _ = _run(loaded, target_server.port, proposer, draft, prompts, 24, params, seed=11)
    for prompt, out in zip(prompts, outs, strict=True):
        assert out == target_alone_sampled(loaded["target"], prompt, 24, params, 11)


@pytest.mark.parametrize("proposer", ["model", "hybrid"])
def test_windows_respect_the_targets_max_window(loaded, proposer):
    """A target that verifies at most 2 drafts: the draft reads that at connect and never sends more."""
    from dsd_runtime.draft.engine import DraftEngine
    from tests.support.runtime_fixtures import start_target

    target = start_target(loaded["target"], max_window=2)
    engine = DraftEngine(loaded["same"], f"127.0.0.1:{target.port}",
                         WindowConfig(gamma=6, gamma_max=8, proposer=proposer))
    try:
        engine.connect()
        prompt = loaded["target"].tokenizer("The quick brown fox")["input_ids"]
        stats = GenerationStats()
        out = list(engine.speculator.generate(GenerationRequest(prompt, 24), stats=stats))
        assert out == target_alone(loaded["target"], prompt, 24)
        assert stats.rounds and stats.proposed <= 2 * stats.rounds
    finally:
        engine.close()
        target.stop(0)
