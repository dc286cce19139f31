"""The official `openai` client works against the draft server: completions, chat, streaming, models."""

from __future__ import annotations

import openai
import pytest

from dsd_spec.sampling import SamplingParams
from tests.lossless.test_greedy_equals_target_alone import target_alone


@pytest.fixture
def client(api):
    c = openai.OpenAI(base_url=f"{api.base_url}/v1", api_key="unused", max_retries=0)
    yield c
    c.close()


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_completion_is_the_targets_greedy_output_with_usage(client, api, loaded):
    tok = loaded["target"].tokenizer
    prompt = "The quick brown fox"
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0)
    want_ids = target_alone(loaded["target"], tok(prompt)["input_ids"], 16)
    eos = tok.eos_token_id
    want_ids = want_ids[: want_ids.index(eos)] if eos in want_ids else want_ids
    assert r.choices[0].text == tok.decode(want_ids, skip_special_tokens=True)
    assert r.usage.prompt_tokens == len(tok(prompt)["input_ids"])
    assert r.usage.completion_tokens == len(want_ids)
    assert r.choices[0].finish_reason in ("length", "stop")


def test_chat_completion_uses_the_chat_template(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                       temperature=0, seed=1)
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens > len("hi")  # template tokens were added


def test_streaming_completion_equals_non_streaming(client):
    kwargs = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 20, "temperature": 0}
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert all(c.choices for c in chunks), "every chunk has a choice unless usage was asked for"
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert all(c.usage is None for c in chunks)


def test_streaming_chat_yields_deltas(client):
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "tell me"}],
                                            max_tokens=12, temperature=0.8, seed=3, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    assert deltas[0].role == "assistant"
    assert len(deltas) >= 2


def test_seeded_sampling_is_reproducible_over_http(client):
    kwargs = {"model": "tiny", "prompt": "1 2 3", "max_tokens": 16, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    assert client.completions.create(**kwargs).choices[0].text == client.completions.create(**kwargs).choices[0].text


def test_stop_string_ends_the_text_before_it(client, api, loaded):
    kwargs = {"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 24, "temperature": 0}
    full = client.completions.create(**kwargs).choices[0].text
    assert len(full) >= 4
    stop = full[2:4]
    r = client.completions.create(stop=[stop], **kwargs)
    assert r.choices[0].text == full[: full.find(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_configured_sampling_defaults_apply_when_a_request_omits_them(client, api, loaded):
    tok = loaded["target"].tokenizer
    prompt = "Once upon a time"
    want_ids = target_alone(loaded["target"], tok(prompt)["input_ids"], 12)
    eos = tok.eos_token_id
    want = tok.decode(want_ids[: want_ids.index(eos)] if eos in want_ids else want_ids, skip_special_tokens=True)
    before = api.engine.sampling_defaults
    api.engine.set_sampling_defaults(SamplingParams(temperature=0.0))  # as the operator's ConfigMap would
    try:
        texts = {client.completions.create(model="tiny", prompt=prompt, max_tokens=12, seed=s).choices[0].text
                 for s in (1, 2, 3)}
        assert texts == {want}  # greedy without asking: the target's own output, whatever the seed
        sampled = {client.completions.create(model="tiny", prompt=prompt, max_tokens=12, seed=s,
                                             temperature=1.0).choices[0].text for s in (1, 2, 3)}
        assert len(sampled) > 1  # an explicit temperature still wins
    finally:
        api.engine.set_sampling_defaults(before)
