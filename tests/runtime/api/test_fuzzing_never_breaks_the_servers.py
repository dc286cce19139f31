"""Fuzzing: the HTTP API from its own OpenAPI schema (schemathesis) and gRPC Verify with hypothesis-built
requests. Only 2xx/4xx and OK/INVALID_ARGUMENT/RESOURCE_EXHAUSTED come back, never a 5xx, INTERNAL or a crash,
and both servers still serve correct output afterwards. Seeded (derandomize) and bounded in examples."""

from __future__ import annotations

import grpc
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from dsd_runtime.common import models, tiny
from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.draft.client import TargetClient
from dsd_runtime.draft.speculating import GenerationRequest, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from tests.lossless.test_greedy_equals_target_alone import target_alone
from tests.runtime.api.conftest import api_server

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """Servers on tiny models with a 64-token context: every fuzzed generation is short (n x 64 tokens at most)."""
    root = tmp_path_factory.mktemp("fuzz-models")
    target = models.load(str(tiny.build_tiny_model(root / "target", seed=1, max_positions=64)))
    draft = models.load(str(tiny.build_tiny_model(root / "draft", seed=2, max_positions=64)))
    with api_server(target, draft) as server:
        yield server


@pytest.fixture(scope="module")
def operations(api):
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    return {op.label: op for op in (r.ok() for r in schema.get_all_operations())}


@pytest.mark.parametrize(("label", "mode"), [
    ("POST /v1/completions", GenerationMode.POSITIVE), ("POST /v1/completions", GenerationMode.NEGATIVE),
    ("POST /v1/chat/completions", GenerationMode.POSITIVE), ("POST /v1/chat/completions", GenerationMode.NEGATIVE),
    ("GET /v1/models", GenerationMode.POSITIVE),  # (no parameters: nothing to violate)
])
def test_http_api_never_answers_5xx(api, operations, label, mode):
    """Schema-valid (positive) and schema-violating (negative) requests generated from the app's OpenAPI."""
    # (schemathesis' pytest plugin does not run under pytest 9 yet, so its strategies drive hypothesis here)
    @given(case=operations[label].as_strategy(generation_mode=mode))
    @FUZZ
    def run(case):
        case.call_and_validate(base_url=api.base_url, timeout=60,
                               checks=[not_a_server_error, status_code_conformance, content_type_conformance])

    run()


VOCAB = 260  # the tiny models' vocabulary
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, 1.0, 1e-30]))
token_ids = st.integers(-3, VOCAB + 3)


@st.composite
def verify_requests(draw) -> dsd_pb2.VerifyRequest:
    n_context = draw(st.integers(0, 40))
    context = draw(st.lists(token_ids, min_size=n_context, max_size=n_context))
    committed = draw(st.one_of(st.just(n_context), st.integers(0, 100)))
    drafts = draw(st.lists(token_ids, max_size=40))
    probs = draw(st.lists(st.builds(dsd_pb2.DraftDistribution, token_ids=st.lists(token_ids, max_size=6),
                                    probs=st.lists(floats, max_size=6)), max_size=len(drafts) + 1))
    sampling = dsd_pb2.SamplingParams(temperature=draw(floats), top_k=draw(st.integers(-(2**31), 2**31 - 1)),
                                      top_p=draw(floats), seed=draw(st.integers(0, 2**64 - 1)))
    return dsd_pb2.VerifyRequest(
        session_id=draw(st.sampled_from(["", "s1", "s2", "a" * 300])), committed_len=committed, context=context,
        draft_tokens=drafts, draft_probs=probs if draw(st.booleans()) else [], sampling=sampling,
        logprobs=draw(st.booleans()), top_logprobs=draw(st.integers(0, 40)))


@pytest.fixture(scope="module")
def stub(api):
    channel = grpc.insecure_channel(f"127.0.0.1:{api.target_port}")
    yield dsd_pb2_grpc.TargetStub(channel)
    channel.close()


ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}


@given(request=verify_requests())
@settings(FUZZ, max_examples=400)
def test_grpc_verify_answers_ok_or_invalid_argument(stub, request):
    try:
        response = stub.Verify(request, timeout=30)
    except grpc.RpcError as e:
        assert e.code() in ALLOWED, (e.code(), e.details())
        assert e.details()
        return
    if not response.need_context:
        assert response.num_accepted <= len(request.draft_tokens)
        assert 0 <= response.next_token < VOCAB
        assert len(response.logprobs) == (response.num_accepted + 1 if request.logprobs else 0)


def test_both_servers_still_serve_correct_output_afterwards(api):
    """Runs after the fuzzers (file order): lossless greedy output through gRPC and through HTTP."""
    target = api.engine_target.servicer.model
    prompt = target.tokenizer("The quick brown fox")["input_ids"]
    client = TargetClient(f"127.0.0.1:{api.target_port}")
    try:
        spec = Speculator(api.engine.draft.lm, client, WindowController(WindowConfig(gamma=3)))
        assert list(spec.generate(GenerationRequest(prompt, 16))) == target_alone(target, prompt, 16)
    finally:
        client.close()
    r = httpx.post(f"{api.base_url}/v1/completions", json={"prompt": prompt, "max_tokens": 4, "temperature": 0},
                   timeout=30)
    assert r.status_code == 200 and httpx.get(f"{api.base_url}/readyz", timeout=5).status_code == 200
