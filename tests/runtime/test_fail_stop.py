"""A batcher whose worker fails stops its server cleanly: the round in flight and every later one get an error at
once (none waits for a pass that will never run), and health says so, so probes restart the replica and drafts
go to another one."""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from tests.runtime.api.conftest import api_server
from tests.support.runtime_fixtures import start_target


def _observer_bug(_sequences: int, _tokens: int, _seconds: float) -> None:
    raise KeyError("observer bug")  # stands for any bug in the batcher's bookkeeping, outside the model pass


def _verify(stub: dsd_pb2_grpc.TargetStub, sid: str) -> dsd_pb2.VerifyResponse:
    return stub.Verify(dsd_pb2.VerifyRequest(session_id=sid, committed_len=3, context=[1, 2, 3], draft_tokens=[4]),
                       timeout=30)


def test_a_failed_target_batcher_answers_internal_and_turns_not_serving(loaded):
    server = start_target(loaded["target"])
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = dsd_pb2_grpc.TargetStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    try:
        assert _verify(stub, "before").next_token >= 0
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        server.servicer.batcher.on_pass = _observer_bug
        for sid in ("in flight", "later"):
            with pytest.raises(grpc.RpcError) as err:
                _verify(stub, sid)
            assert err.value.code() == grpc.StatusCode.INTERNAL
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        channel.close()
        server.stop(0)


def test_a_failed_draft_batcher_fails_requests_and_turns_the_liveness_probe_red(loaded):
    with api_server(loaded["target"], loaded["partial"]) as api:
        body = {"model": "tiny", "prompt": "The cat", "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{api.base_url}/v1/completions", json=body, timeout=30).status_code == 200
        api.engine.batcher.on_pass = _observer_bug
        assert httpx.post(f"{api.base_url}/v1/completions", json=body, timeout=30).status_code == 500
        probe = httpx.get(f"{api.base_url}/healthz", timeout=5)
        assert probe.status_code == 503
        assert "batcher failed" in probe.text
