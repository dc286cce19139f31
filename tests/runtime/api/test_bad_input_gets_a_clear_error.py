"""Bad requests get 4xx with an OpenAI-style body naming the parameter; bad gRPC gets INVALID_ARGUMENT."""

from __future__ import annotations

import grpc
import httpx
import pytest

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.draft.engine import DraftEngine
from dsd_runtime.draft.windowing import WindowConfig
from tests.runtime.api.conftest import api_server, run_api


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "temperature": -1}, "temperature"),
        ({"prompt": "hi", "top_p": 1.5}, "top_p"),
        ({"prompt": "hi", "top_k": -2}, "top_k"),
        ({"prompt": "hi", "seed": -1}, "seed"),
        ({"max_tokens": 3}, "prompt"),
        ({"prompt": "", "max_tokens": 3}, "prompt"),
        ({"prompt": [1, 2, 999999]}, "prompt"),
        ({"prompt": "hi", "max_tokens": 100000}, "max_tokens"),
    ],
)
def test_bad_completion_parameters_are_400_naming_the_parameter(api, body, param):
    r = httpx.post(f"{api.base_url}/v1/completions", json=body, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
    assert err["message"]


def test_unknown_model_is_404_model_not_found(api):
    r = httpx.post(f"{api.base_url}/v1/completions", json={"prompt": "hi", "model": "gpt-4"}, timeout=10)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == {"message": "model 'gpt-4' does not exist here; this server serves 'tiny'",
                                 "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


def test_context_overflow_names_the_limit(api):
    r = httpx.post(f"{api.base_url}/v1/completions", json={"prompt": "hi", "max_tokens": 100000}, timeout=10)
    assert "context length of 512 tokens" in r.json()["error"]["message"]


def test_malformed_json_is_400(api):
    r = httpx.post(f"{api.base_url}/v1/completions", content=b"{not json", timeout=10,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["error"]["message"]


def test_bad_chat_role_is_400(api):
    r = httpx.post(f"{api.base_url}/v1/chat/completions", timeout=10,
                   json={"messages": [{"role": "wizard", "content": "x"}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages.0.role"


@pytest.fixture
def stub(api):
    channel = grpc.insecure_channel(f"127.0.0.1:{api.target_port}")
    yield dsd_pb2_grpc.TargetStub(channel)
    channel.close()


@pytest.mark.parametrize(
    ("request_kwargs", "reason"),
    [
        ({"session_id": "s", "committed_len": 2, "context": [1, 99999], "draft_tokens": [1]}, "outside the vocabulary"),
        ({"session_id": "s", "committed_len": 1, "context": [1], "draft_tokens": [1] * 40}, "max window"),
        ({"session_id": "s", "committed_len": 3, "context": [1, 2], "draft_tokens": []}, "committed_len is 3"),
        ({"session_id": "", "committed_len": 1, "context": [1]}, "session_id"),
        ({"session_id": "s", "committed_len": 1, "context": [1], "draft_tokens": [5],
          "draft_probs": [dsd_pb2.DraftDistribution(token_ids=[5], probs=[0.5])]}, "sums to"),
        ({"session_id": "s", "committed_len": 600, "context": [1] * 600, "draft_tokens": [1]}, "context of 512"),
    ],
)
def test_bad_verify_requests_are_invalid_argument_with_a_reason(stub, request_kwargs, reason):
    with pytest.raises(grpc.RpcError) as err:
        stub.Verify(dsd_pb2.VerifyRequest(**request_kwargs), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in err.value.details()


def test_unknown_session_without_context_asks_for_it(stub):
    r = stub.Verify(dsd_pb2.VerifyRequest(session_id="never-seen", committed_len=5, draft_tokens=[1]), timeout=10)
    assert r.need_context


def test_oversize_context_is_resource_exhausted(loaded):
    from tests.support.runtime_fixtures import start_target

    server = start_target(loaded["target"], max_cached_tokens=16)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        with pytest.raises(grpc.RpcError) as err:
            dsd_pb2_grpc.TargetStub(channel).Verify(
                dsd_pb2.VerifyRequest(session_id="big", committed_len=40, context=list(range(40)), draft_tokens=[1]),
                timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max-cached-tokens" in err.value.details()
    finally:
        channel.close()
        server.stop(0)


def test_unreachable_target_is_503_with_retry_after_within_the_deadline(loaded):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    engine = DraftEngine(loaded["partial"], f"127.0.0.1:{dead_port}", WindowConfig(), target_deadline_s=1.5)
    engine.ready.set()  # pretend it was connected, then the target vanished
    server, thread, url = run_api(engine)
    try:
        t0 = time.monotonic()
        r = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=30)
        assert r.status_code == 503
        assert r.headers["Retry-After"]
        assert time.monotonic() - t0 < 10
    finally:
        server.should_exit = True
        thread.join(10)
        engine.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_full_target_is_a_429_with_retry_after_streamed_or_not(loaded, stream):
    """Back-pressure reaches the client as OpenAI's rate-limit error, before any 200 header goes out."""
    with api_server(loaded["target"], loaded["partial"], max_sessions=0) as server:
        r = httpx.post(f"{server.base_url}/v1/completions", timeout=30,
                       json={"model": "tiny", "prompt": "Hello", "max_tokens": 4, "stream": stream})
    assert r.status_code == 429
    assert r.headers["Retry-After"]
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert "at capacity" in r.json()["error"]["message"]
