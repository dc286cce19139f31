"""Target-only mode (the Decode stream): the target decodes alone and streams; the output is the target
alone's, greedy and seeded; a draft that leaves the stream early costs the target a truncation, not a re-prefill."""

from __future__ import annotations

import pytest

from dsd_runtime.draft.client import LinkEmulation, TargetClient
from dsd_runtime.draft.drafting import DraftingState
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_spec.sampling import SamplingParams
from tests.lossless.test_greedy_equals_target_alone import PROMPTS, target_alone
from tests.lossless.test_seeded_sampling_is_window_invariant import target_alone_sampled


def _speculator(port, proposer, link=None, state=None):
    client = TargetClient(f"127.0.0.1:{port}", link)
    return client, Speculator(None, client, WindowController(WindowConfig(proposer=proposer), has_model=False),
                              drafting=state or DraftingState(), max_context=512)


@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=0.9, top_p=0.9)])
def test_proposer_none_streams_every_token_after_the_first(loaded, target_server, params):
    client, spec = _speculator(target_server.port, "none", LinkEmulation(one_way_delay_ms=2.0))
    tok = loaded["target"].tokenizer
    try:
        for text in PROMPTS[:3]:
            prompt = tok(text)["input_ids"]
            stats = GenerationStats()
            out = list(spec.generate(GenerationRequest(prompt, 30, params, seed=4), stats=stats))
            want = (target_alone(loaded["target"], prompt, 30) if params.greedy
                    else target_alone_sampled(loaded["target"], prompt, 30, params, 4))
            assert out == want
            assert stats.target_only_tokens == 29, "the first token is the prefill round's, the rest streamed"
            assert stats.rounds == 0
    finally:
        client.close()


def test_leaving_the_stream_truncates_the_session_instead_of_re_prefilling(loaded, target_server):
    tok = loaded["target"].tokenizer
    prompt = tok("Once upon a time")["input_ids"]
    answer = target_alone(loaded["target"], prompt, 40)
    state = DraftingState()
    state.cache.add(answer[10:40])  # a text holding the answer's middle only
    client, spec = _speculator(target_server.port, "suffix", state=state)
    verifier = target_server.servicer.verifier
    before = verifier.reprefills
    try:
        stats = GenerationStats()
        # Nothing matches the first tokens: they are streamed; once the output reaches the cached middle, the
        # match pays and the draft leaves the stream, behind the tokens the target already decoded ahead.
        out = list(spec.generate(GenerationRequest(prompt, 36), stats=stats))
    finally:
        client.close()
    assert out == answer[:36]
    assert stats.target_only_tokens >= 5, "the start must have been streamed"
    assert stats.tokens_by_source.get("suffix", 0) >= 10, "the cached middle must have been drafted"
    assert verifier.reprefills - before == 1, "only the first round prefilled: leaving the stream truncated"
