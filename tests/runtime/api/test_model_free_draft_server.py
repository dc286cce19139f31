"""A draft server without a draft model (`dsd draft --model none`): tokenizer only, model-free drafting,
greedy output through the official client equal to the target alone, repeated answers drafted from the cache."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dsd_runtime.common import models
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.windowing import WindowConfig
from tests.lossless.test_greedy_equals_target_alone import target_alone
from tests.runtime.api.conftest import api_server


@pytest.fixture(scope="module")
def model_free_api(tiny_models, loaded):
    tokenizer_only = models.load_tokenizer(str(tiny_models["target"]))
    assert tokenizer_only.lm is None
    with api_server(loaded["target"], tokenizer_only, WindowConfig(proposer="hybrid")) as server:
        yield server.base_url, server.engine


def test_model_free_drafting_is_lossless_and_learns_from_earlier_answers(model_free_api, loaded):
    url, _ = model_free_api
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0)
    tok = loaded["target"].tokenizer
    prompt = "The quick brown fox"
    want = tok.decode(target_alone(loaded["target"], tok(prompt)["input_ids"], 32), skip_special_tokens=True)
    for _ in range(2):  # the second answer is in the cross-request cache
        r = client.completions.create(model="tiny", prompt=prompt, max_tokens=32, temperature=0)
        assert r.choices[0].text == want
    text = client.with_raw_response.models.list().http_response.text  # readiness is true: 200
    assert "tiny" in text
    metrics = {s.name + str(s.labels.get("source", "")): s.value
               for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
               for s in fam.samples}
    assert metrics["dsd_draft_tokens_accepted_by_source_totalsuffix"] >= 16, "the repeat was not drafted"
    assert metrics.get("dsd_draft_tokens_proposed_by_source_totalmodel", 0) == 0, "there is no draft model"



def test_switching_a_model_free_server_to_the_model_proposer_is_refused(model_free_api, tiny_models):
    _, engine = model_free_api
    with pytest.raises(ValueError, match="needs a draft model"):
        engine.window.update(proposer="model")
    assert engine.window.config.proposer == "hybrid", "the old setting stays"
    with pytest.raises(ValueError, match="needs a draft model"):
        DraftEngine(models.load_tokenizer(str(tiny_models["target"])), "127.0.0.1:1", WindowConfig(proposer="model"))
