"""OpenAI conformance, checked with the official openai client: usage chunks, logprobs, n, EOS and chat template
from the target, tiny temperatures, errors in OpenAI's shape, limits, refusals, disconnects and readiness."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
import torch

from dsd_runtime.common import models, tiny
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.monitoring import TargetMonitor
from dsd_runtime.draft.windowing import WindowConfig
from dsd_runtime.target.server import TargetServer, TargetSettings
from tests.lossless.test_greedy_equals_target_alone import target_alone
from tests.runtime.api.conftest import _free_port, api_server, run_api
from tests.support.waiting import wait_for

PROMPT = "The quick brown fox"


@pytest.fixture
def client(api):
    c = openai.OpenAI(base_url=f"{api.base_url}/v1", api_key="unused", max_retries=0)
    yield c
    c.close()


def _greedy_text(loaded, prompt: str, n: int) -> str:
    tok = loaded["target"].tokenizer
    ids = target_alone(loaded["target"], tok(prompt)["input_ids"], n)
    return tok.decode(ids[: ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids,
                      skip_special_tokens=True)


# ---- streams: a usage chunk only when asked for

@pytest.mark.parametrize("chat", [False, True])
def test_streams_carry_usage_only_when_include_usage_is_set(client, chat):
    def create(**kw):
        if chat:
            return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=10, temperature=0, stream=True, **kw)
        return client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0, stream=True,
                                         **kw)

    plain = list(create())
    assert plain and all(c.choices for c in plain), "a chunk without choices breaks clients reading choices[0]"
    assert all(c.usage is None for c in plain)
    with_usage = list(create(stream_options={"include_usage": True}))
    *body, last = with_usage
    assert last.choices == [] and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.choices and c.usage is None for c in body)


@pytest.mark.parametrize("stream", [False, True])
def test_usage_says_how_the_tokens_were_made(client, stream):
    """usage.dsd: the request's rounds and target-only steps; every output token has exactly one maker."""
    kw = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, n=2, **kw)
    usage = list(r)[-1].usage if stream else r.usage
    dsd = usage.model_extra["dsd"]
    made = sum(dsd["tokens_by_source"].values())
    # A final stop token is made but not returned (completion_tokens), once per choice at most.
    assert usage.completion_tokens <= made <= usage.completion_tokens + 2, dsd
    assert sum(dsd["accepted_by_position"]) == dsd["accepted_tokens"] <= dsd["proposed_tokens"]
    assert all(a <= b for a, b in zip(dsd["accepted_by_position"], dsd["reached_by_position"], strict=False))
    steps = sum(dsd["target_only_steps_by_window"].values())
    assert dsd["target_only_tokens"] == steps + sum(dsd["self_accepted_by_position"])
    assert dsd["target_only_tokens"] + dsd["rounds"] + dsd["accepted_tokens"] <= made


def test_stream_options_without_stream_is_400(api):
    r = httpx.post(f"{api.base_url}/v1/completions", timeout=10,
                   json={"prompt": "hi", "stream_options": {"include_usage": True}})
    assert r.status_code == 400 and "stream_options" in r.json()["error"]["message"]


# ---- logprobs

def _target_logprobs(loaded, ids: list[int], n: int) -> torch.Tensor:
    """log softmax of the target alone at each of the n greedy positions: [n, vocab]."""
    out = target_alone(loaded["target"], ids, n)
    with torch.no_grad():
        logits = loaded["target"].lm.model(torch.tensor([ids + out])).logits[0]
    return torch.log_softmax(logits[len(ids) - 1: len(ids) - 1 + n].float(), dim=-1)


def test_completion_logprobs_are_the_targets(client, loaded):
    ids = loaded["target"].tokenizer(PROMPT)["input_ids"]
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    k = r.usage.completion_tokens
    want = _target_logprobs(loaded, ids, k)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == k
    assert lp.token_logprobs == pytest.approx(want.max(dim=-1).values.tolist(), abs=1e-4)  # greedy = top-1
    assert all(len(top) <= 2 and max(top.values()) == pytest.approx(v, abs=1e-4)
               for top, v in zip(lp.top_logprobs, lp.token_logprobs, strict=True))
    tok = loaded["target"].tokenizer
    assert lp.tokens == [tok.decode([t]) for t in target_alone(loaded["target"], ids, k)]
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(k)]


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs_with_top_logprobs(client, stream):
    kw = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "temperature": 0.7,
          "seed": 5, "logprobs": True, "top_logprobs": 3}
    if stream:
        chunks = [c for c in client.chat.completions.create(stream=True, **kw) if c.choices]
        content = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
    else:
        r = client.chat.completions.create(**kw)
        content, text = r.choices[0].logprobs.content, r.choices[0].message.content
    assert content and b"".join(bytes(e.bytes) for e in content).decode("utf-8", "replace") == text
    for e in content:
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob >= e.logprob - 1e-6
        assert e.logprob <= 0 and bytes(e.bytes).decode("utf-8", "replace") == e.token


def test_top_logprobs_without_logprobs_is_400(api):
    r = httpx.post(f"{api.base_url}/v1/chat/completions", timeout=10,
                   json={"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] is None


# ---- n > 1 and prompt batches

def test_n_choices_seeded_first_equals_n1(client, loaded):
    kw = {"model": "tiny", "prompt": "Once upon", "max_tokens": 12, "temperature": 1.0, "seed": 9}
    one = client.completions.create(**kw).choices[0].text
    r = client.completions.create(n=3, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.choices[0].text == one
    assert len({c.text for c in r.choices}) > 1, "other choices get their own seeds"
    assert r.usage.prompt_tokens == len(loaded["target"].tokenizer("Once upon")["input_ids"]), "prompt counted once"
    assert r.usage.completion_tokens > client.completions.create(**kw).usage.completion_tokens


def test_n_choices_streamed_are_indexed(client):
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}], n=2,
                                            max_tokens=8, temperature=1.0, seed=1, stream=True)
    texts = {0: "", 1: ""}
    finished = set()
    for c in stream:
        ch = c.choices[0]
        texts[ch.index] += ch.delta.content or ""
        if ch.finish_reason:
            finished.add(ch.index)
    whole = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "go"}], n=2,
                                           max_tokens=8, temperature=1.0, seed=1)
    assert finished == {0, 1}
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]


def test_prompt_batch_and_echo(client, loaded):
    r = client.completions.create(model="tiny", prompt=["Hello", PROMPT], max_tokens=6, temperature=0, echo=True)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text.startswith("Hello") and r.choices[1].text.startswith(PROMPT)
    assert r.choices[1].text == PROMPT + _greedy_text(loaded, PROMPT, 6)


def test_too_many_choices_is_400(api):
    r = httpx.post(f"{api.base_url}/v1/completions", json={"prompt": ["a"] * 5, "n": 4}, timeout=10)
    assert r.status_code == 400 and "at most 16" in r.json()["error"]["message"]


# ---- temperatures below 1e-5 are greedy

@pytest.mark.parametrize("temperature", [1e-40, 1e-6])
def test_tiny_temperature_is_greedy(client, loaded, temperature):
    r = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=temperature)
    assert r.choices[0].text == _greedy_text(loaded, PROMPT, 10)


# ---- errors in OpenAI's shape, with a code

def test_unknown_model_is_404_with_code(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found" and e.value.body["param"] == "model"


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/completions", 405, "method_not_allowed"),
    ("POST", "/v1/models", 405, "method_not_allowed"),
    ("GET", "/v1/nothing", 404, "not_found"),
    ("POST", "/v1/embeddings", 404, "not_found"),
])
def test_framework_errors_have_openai_shape(api, method, path, status, code):
    r = httpx.request(method, f"{api.base_url}{path}", timeout=10)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err["type"] == "invalid_request_error" and path in err["message"]


def test_an_internal_failure_is_500_with_openai_shape(api, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(api.engine, "check_length", broken)
    r = httpx.post(f"{api.base_url}/v1/completions", json={"prompt": "hi"}, timeout=10)
    assert r.status_code == 500
    assert r.json()["error"] == {"message": "internal error: RuntimeError", "type": "server_error", "param": None,
                                 "code": "internal_error"}
    monkeypatch.undo()
    assert httpx.post(f"{api.base_url}/v1/completions", json={"prompt": "hi", "max_tokens": 2},
                      timeout=10).status_code == 200


# ---- limits

def test_body_over_the_limit_is_413(api):
    r = httpx.post(f"{api.base_url}/v1/completions", json={"prompt": "x" * (1 << 20)}, timeout=10)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_streamed_body_over_the_limit_is_413(api):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(1100):
            yield b"x" * 1024
        yield b'"}'

    r = httpx.post(f"{api.base_url}/v1/completions", content=chunks(), timeout=10,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 stop strings"),
    ({"stop": "x" * 129}, "stop", "1 to 128 characters"),
    ({"stop": [""]}, "stop", "1 to 128 characters"),
    ({"prompt": "word " * 600}, "max_tokens", "context length of 512 tokens"),
])
def test_limits_are_400_naming_the_parameter(api, body, param, says):
    r = httpx.post(f"{api.base_url}/v1/completions", json={"prompt": "hi", **body}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and says in r.json()["error"]["message"]


# ---- refused parameters name themselves; ignored ones do no harm

@pytest.mark.parametrize(("endpoint", "extra", "param"), [
    ("completions", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("completions", {"presence_penalty": -1}, "presence_penalty"),
    ("completions", {"logit_bias": {"5": 10}}, "logit_bias"),
    ("completions", {"suffix": "end"}, "suffix"),
    ("completions", {"best_of": 3}, None),
    ("completions", {"echo": True, "logprobs": 1}, None),
    ("chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("chat/completions", {"response_format": {"type": "json_object"}}, "response_format.type"),
    ("chat/completions", {"modalities": ["text", "audio"]}, "modalities"),
])
def test_unsupported_parameters_are_refused_by_name(api, endpoint, extra, param):
    base = {"prompt": "hi"} if endpoint == "completions" else {"messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{api.base_url}/v1/{endpoint}", json={**base, **extra}, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "unsupported_parameter" and "support" in err["message"]


def test_metadata_parameters_are_accepted_and_content_parts_work(client):
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}], max_tokens=3,
        temperature=0, user="u1", metadata={"k": "v"}, store=False, frequency_penalty=0, tool_choice="none")
    assert r.choices[0].finish_reason in ("stop", "length")


# ---- a non-streaming request is cancelled when its client disconnects

def test_disconnecting_a_non_streaming_request_cancels_it(api):
    for seed in range(5, 25):
        body = {"prompt": "Once", "max_tokens": 400, "temperature": 0.9, "seed": seed}
        t0 = time.monotonic()
        full = httpx.post(f"{api.base_url}/v1/completions", json=body, timeout=60).json()["usage"]
        elapsed = time.monotonic() - t0
        if full["completion_tokens"] > 100:
            break
    assert full["completion_tokens"] > 100, "no seed in 5..24 gives a long enough request"
    generated = api.engine.metrics.tokens_generated
    before = generated._value.get()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{api.base_url}/v1/completions", json=body, timeout=httpx.Timeout(10, read=elapsed / 5))
    wait_for(lambda: api.engine.metrics.active_requests._value.get() == 0, 30, "generation cancelled")
    assert generated._value.get() - before < full["completion_tokens"] * 0.75, "generation ran on"
    wait_for(lambda: len(api.engine_target.servicer.store) == 0, 10, "target session closed")


# ---- EOS ids and chat template come from the target

@pytest.fixture(scope="module")
def eos_target(tiny_models, loaded, tmp_path_factory):
    """The tiny target with a list of EOS ids in its generation config and a chat template of its own."""
    tok = loaded["target"].tokenizer
    greedy = target_alone(loaded["target"], tok(PROMPT)["input_ids"], 16)
    stop_id = next(t for i, t in enumerate(greedy) if i >= 3 and t not in greedy[:i] and t < 256)
    path = tiny.build_tiny_model(tmp_path_factory.mktemp("eos") / "target", seed=1)
    model = models.load(str(path))
    model.lm.model.generation_config.eos_token_id = [tok.eos_token_id, stop_id]
    model.tokenizer.chat_template = "{% for m in messages %}## {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}" \
                                    "{% if add_generation_prompt %}## assistant: {% endif %}"
    with api_server(model, loaded["partial"]) as server:
        yield server.base_url, model, greedy, stop_id


def test_generation_stops_at_any_eos_id_of_the_targets_generation_config(eos_target):
    url, model, greedy, stop_id = eos_target
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
    r = c.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == model.tokenizer.decode(greedy[: greedy.index(stop_id)])
    chunks = list(c.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_uses_the_targets_template(eos_target):
    url, model, _, _ = eos_target
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
    messages = [{"role": "user", "content": "hello there"}]
    r = c.chat.completions.create(model="tiny", messages=messages, max_tokens=2, temperature=0)
    want = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
    assert r.usage.prompt_tokens == len(want)
    draft_template = tiny.build_tokenizer().apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                                return_dict=False)
    assert len(want) != len(draft_template), "the two templates must differ for this test to mean anything"


# ---- readiness tells the truth

def test_readiness_follows_the_target(loaded):
    port = _free_port()
    engine = DraftEngine(loaded["partial"], f"127.0.0.1:{port}", WindowConfig(gamma=2), target_deadline_s=5,
                         served_model_name="tiny")
    monitor = TargetMonitor(engine, connect_timeout_s=2)
    monitor.start()
    uv, thread, url = run_api(engine)
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
    target = None
    try:
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 503
        with pytest.raises(openai.APIStatusError) as e:
            c.models.list()
        assert e.value.status_code == 503 and e.value.code == "service_unavailable"
        for _ in range(2):  # up, lost, up again
            target = TargetServer(loaded["target"], TargetSettings(), f"127.0.0.1:{port}")
            target.start()
            wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 30, "ready")
            assert [m.id for m in c.models.list().data] == ["tiny"]
            assert c.completions.create(model="tiny", prompt="hi", max_tokens=3, temperature=0).choices
            stopper = threading.Thread(target=target.stop, args=(1,))
            stopper.start()
            wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 503, 30, "not ready")
            stopper.join()
            target = None
            r = httpx.post(f"{url}/v1/completions", json={"prompt": "hi"}, timeout=10)
            assert r.status_code == 503 and r.headers["Retry-After"]
    finally:
        if target is not None:
            target.stop(0)
        monitor.stop()
        uv.should_exit = True
        thread.join(10)
        engine.close()
