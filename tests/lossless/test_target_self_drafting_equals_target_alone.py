"""Target-only streams that draft for themselves (target.self_drafting) still give the target alone's output.

A request repeated after the first one closed finds its text in the target's cross-request cache: the suffix
proposer then drafts most of the stream and the target accepts it, greedy and seeded alike. Stops inside a
self-drafted run, max_tokens, a bad proposer and a target told not to self-draft are checked on the raw RPC.
"""

from __future__ import annotations

import grpc
import pytest

from dsd_runtime.common import models
from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_spec.sampling import SamplingParams
from tests.lossless.test_greedy_equals_target_alone import PROMPTS, target_alone
from tests.lossless.test_seeded_sampling_is_window_invariant import target_alone_sampled
from tests.support.runtime_fixtures import start_target

SAMPLED = SamplingParams(temperature=0.9, top_p=0.9)


def _generate(port: int, proposer: str, prompt: list[int], n: int, params: SamplingParams,
              seed: int, mode: str = "speculate", stops: frozenset[int] = frozenset()) -> tuple[list[int],
                                                                                               GenerationStats]:
    """A draft server without a model and no handshake (it sends every model-free window it finds itself):
    with `mode` off, or `proposer` none, it streams after the first token."""
    client = TargetClient(f"127.0.0.1:{port}")
    try:
        config = WindowConfig(proposer=proposer, mode=mode)
        spec = Speculator(None, client, WindowController(config, has_model=False), max_context=512)
        stats = GenerationStats()
        request = GenerationRequest(prompt, n, params, seed=seed, stop_token_ids=stops)
        return list(spec.generate(request, stats=stats)), stats
    finally:
        client.close()  # closes the session: the target remembers its text


def _reference(loaded, prompt: list[int], n: int, params: SamplingParams, seed: int) -> list[int]:
    if params.greedy:
        return target_alone(loaded["target"], prompt, n)
    return target_alone_sampled(loaded["target"], prompt, n, params, seed)


@pytest.mark.parametrize("params", [SamplingParams(), SAMPLED], ids=["greedy", "sampled"])
def test_a_repeated_request_is_self_drafted_from_the_cache_and_equals_the_target_alone(loaded, target_server,
                                                                                        params):
    tok = loaded["target"].tokenizer
    for text in PROMPTS[:3]:
        prompt = tok(text)["input_ids"]
        want = _reference(loaded, prompt, 30, params, seed=5)
        # The operator's mode off: no windows from the draft, the stream self-drafts with suffix.
        first, _ = _generate(target_server.port, "suffix", prompt, 30, params, seed=5, mode="off")
        again, stats = _generate(target_server.port, "suffix", prompt, 30, params, seed=5, mode="off")
        assert first == want
        assert again == want
        # Token 1 is the prefill round's; the rest is streamed, and the cache holds all of it.
        assert stats.tokens_by_source.get("target-suffix", 0) >= 20, stats.tokens_by_source
    counters = target_server.registry.get_sample_value
    accepted = counters("dsd_target_self_accepted_tokens_total", {"proposer": "suffix"})
    assert accepted >= 60
    # Per position (what DSD-Sim replays): the positions add up to the total, none accepts more than it judged.
    at = [counters("dsd_target_self_accepted_per_position_total", {"position": str(i)}) for i in range(1, 17)]
    reached = [counters("dsd_target_self_reached_per_position_total", {"position": str(i)}) for i in range(1, 17)]
    assert sum(at) == accepted
    assert all(a <= r for a, r in zip(at, reached, strict=True)) and reached[0] > 0
    drafted_steps = sum(counters("dsd_target_only_steps_total", {"window": str(k)}) for k in range(1, 17))
    assert drafted_steps == reached[0], "every step that drafted judged its first token"


@pytest.mark.parametrize("proposer", ["none", "lookup"])
@pytest.mark.parametrize("params", [SamplingParams(), SAMPLED], ids=["greedy", "sampled"])
def test_self_drafted_streams_equal_the_target_alone_on_every_prompt(loaded, target_server, proposer, params):
    tok = loaded["target"].tokenizer
    for text in PROMPTS:
        prompt = tok(text)["input_ids"]
        out, stats = _generate(target_server.port, proposer, prompt, 24, params, seed=2)
        assert out == _reference(loaded, prompt, 24, params, seed=2), text
        if proposer == "none":  # no drafting at all: the target alone
            assert set(stats.tokens_by_source) == {"target"}, stats.tokens_by_source


def test_a_request_without_drafting_is_the_target_alone_even_from_the_cache(loaded, target_server):
    prompt = loaded["target"].tokenizer(PROMPTS[0])["input_ids"]
    first, _ = _generate(target_server.port, "none", prompt, 24, SamplingParams(), seed=0)
    again, stats = _generate(target_server.port, "none", prompt, 24, SamplingParams(), seed=0)
    assert again == first
    assert stats.tokens_by_source == {"target": 24}, "--proposer none must not self-draft"


@pytest.mark.parametrize("params", [SamplingParams(), SAMPLED], ids=["greedy", "sampled"])
def test_an_engine_leaves_lookup_windows_to_a_self_drafting_target(loaded, tiny_models, target_server, params):
    """Through the handshake: Info says the target drafts with lookup itself, so the edge sends none of its own."""
    engine = DraftEngine(models.load_tokenizer(str(tiny_models["target"])), f"127.0.0.1:{target_server.port}",
                         WindowConfig(proposer="lookup"))
    try:
        engine.connect(timeout_s=30)
        assert engine.speculator.target_self_drafting == {"lookup", "suffix", "hybrid"}
        tok = loaded["target"].tokenizer
        for text in PROMPTS:
            prompt = tok(text + " " + text)["input_ids"]  # the text twice: lookup finds matches
            stats = GenerationStats()
            out = list(engine.speculator.generate(GenerationRequest(prompt, 24, params, seed=3), stats=stats))
            assert out == _reference(loaded, prompt, 24, params, seed=3), text
            assert stats.tokens_by_source.get("lookup", 0) == 0, stats.tokens_by_source
            assert stats.target_only_tokens == len(out) - 1, "after the prefill round the request streams"
    finally:
        engine.close()
    drafted = target_server.registry.get_sample_value("dsd_target_self_drafted_tokens_total", {"proposer": "lookup"})
    assert drafted and drafted > 0, "the target drafted nothing for itself"


def _decode(port: int, **fields) -> list[dsd_pb2.DecodeChunk]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return list(dsd_pb2_grpc.TargetStub(channel).Decode(dsd_pb2.DecodeRequest(**fields)))


def _cached(server, tokens: list[int]) -> None:
    server.servicer.self_drafting.remember(tokens)


def test_a_stop_token_inside_a_self_drafted_run_ends_the_stream_there(loaded, target_server):
    prompt = loaded["target"].tokenizer("Once upon a time")["input_ids"]
    answer = target_alone(loaded["target"], prompt, 20)
    _cached(target_server, prompt + answer)
    stop = answer[12]
    cut = answer.index(stop) + 1  # the first occurrence
    chunks = _decode(target_server.port, session_id="s", committed_len=len(prompt), context=prompt, max_tokens=20,
                     stop_token_ids=[stop], proposer="suffix")
    assert [c.token for c in chunks] == answer[:cut]
    assert any(c.source == "suffix" for c in chunks), "the run must have been self-drafted"
    assert chunks[-1].token == stop


@pytest.mark.parametrize("proposer", ["suffix", "hybrid"])
def test_max_tokens_and_the_window_bound_hold(loaded, target_server, proposer):
    prompt = loaded["target"].tokenizer("Once upon a time")["input_ids"]
    answer = target_alone(loaded["target"], prompt, 30)
    _cached(target_server, prompt + answer)
    chunks = _decode(target_server.port, session_id="m", committed_len=len(prompt), context=prompt, max_tokens=7,
                     proposer=proposer, max_window=2)
    assert [c.token for c in chunks] == answer[:7]
    run = longest = 0
    for c in chunks:
        run = run + 1 if c.source else 0
        longest = max(longest, run)
    assert 1 <= longest <= 2, "self-drafted runs never exceed max_window"


def test_an_unknown_proposer_is_invalid_argument_naming_the_field(loaded, target_server):
    with pytest.raises(grpc.RpcError) as err:
        _decode(target_server.port, session_id="x", committed_len=2, context=[1, 2], max_tokens=3,
                proposer="ngram")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "proposer" in err.value.details()


def test_a_target_told_not_to_self_draft_decodes_one_token_per_step(loaded):
    server = start_target(loaded["target"], self_drafting=False)
    try:
        prompt = loaded["target"].tokenizer("Once upon a time")["input_ids"]
        answer = target_alone(loaded["target"], prompt, 16)
        _cached(server, prompt + answer)
        chunks = _decode(server.port, session_id="n", committed_len=len(prompt), context=prompt, max_tokens=16,
                         proposer="suffix")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            info = dsd_pb2_grpc.TargetStub(channel).Info(dsd_pb2.InfoRequest())
    finally:
        server.stop(0)
    assert [c.token for c in chunks] == answer
    assert not any(c.source for c in chunks)
    assert not info.self_drafting, "a draft must not leave windows to a target that will not make them"


def _self_drafting_counters(server) -> tuple[dict[int, float], list[float], list[float]]:
    """The target's target-only steps by window, and its self-drafting's acceptance by position."""
    counters = server.registry.get_sample_value
    steps = {k: counters("dsd_target_only_steps_total", {"window": str(k)}) or 0.0 for k in range(17)}
    at = [counters("dsd_target_self_accepted_per_position_total", {"position": str(i)}) or 0.0 for i in range(1, 17)]
    reached = [counters("dsd_target_self_reached_per_position_total", {"position": str(i)}) or 0.0
               for i in range(1, 17)]
    return steps, at, reached


def _steps_between(before: tuple, after: tuple) -> dict[int, float]:
    return {k: after[0][k] - before[0][k] for k in range(17) if after[0][k] - before[0][k]}


def test_a_requests_own_stats_count_the_target_only_steps_as_the_targets_counters_do(loaded, target_server):
    """GenerationStats (the API's usage.dsd) per request, against the target's counters over the same request."""
    prompt = loaded["target"].tokenizer(PROMPTS[0])["input_ids"]
    _generate(target_server.port, "suffix", prompt, 30, SamplingParams(), seed=0, mode="off")  # fills the cache
    before = _self_drafting_counters(target_server)
    _, stats = _generate(target_server.port, "suffix", prompt, 30, SamplingParams(), seed=0, mode="off")
    after = _self_drafting_counters(target_server)
    steps = _steps_between(before, after)
    assert stats.self_steps_by_window == steps
    assert any(k > 0 for k in steps), "the repeated request drafted for itself"
    assert stats.self_accepted_per_position[:16] == [a - b for a, b in zip(after[1], before[1], strict=True)]
    assert stats.self_reached_per_position[:16] == [a - b for a, b in zip(after[2], before[2], strict=True)]
    assert sum(stats.self_accepted_per_position) == stats.tokens_by_source.get("target-suffix", 0)


def test_a_step_cut_short_by_a_stop_among_its_self_drafted_tokens_still_counts(loaded, target_server):
    """The stop ends the stream before the step's own token; the request's stats count that step all the same
    (its window on every chunk), with the self-drafted tokens the request received as its accepted ones."""
    prompt = loaded["target"].tokenizer("Once upon a time")["input_ids"]
    answer = target_alone(loaded["target"], prompt, 24)
    _cached(target_server, prompt + answer)
    stop = answer[12]
    cut = answer.index(stop) + 1
    raw = _decode(target_server.port, session_id="cut", committed_len=len(prompt), context=prompt, max_tokens=24,
                  stop_token_ids=[stop], proposer="suffix")
    assert raw[-1].token == stop and raw[-1].source, "the stop must land among a step's self-drafted tokens"
    assert all(c.self_window for c in raw if c.source), "every self-drafted chunk names its step's window"
    before = _self_drafting_counters(target_server)
    out, stats = _generate(target_server.port, "suffix", prompt, 24, SamplingParams(), seed=0, mode="off",
                           stops=frozenset([stop]))
    after = _self_drafting_counters(target_server)
    assert out[:cut] == answer[:cut]
    assert stats.self_steps_by_window == _steps_between(before, after)
    assert sum(stats.self_accepted_per_position) == stats.tokens_by_source.get("target-suffix", 0)
