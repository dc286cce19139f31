"""Back-pressure on a real gRPC target: with the model busy, rounds over --max-pending are refused at once, while
health checks, Info and CloseSession still answer (they never wait behind model compute)."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from tests.support.runtime_fixtures import start_target
from tests.support.waiting import wait_for


def _verify(stub, sid: str, timeout: float = 30):
    return stub.Verify(dsd_pb2.VerifyRequest(session_id=sid, committed_len=3, context=[1, 2, 3], draft_tokens=[4]),
                       timeout=timeout)


def test_busy_model_refuses_extra_rounds_at_once_and_still_answers_health_and_close(loaded, held_model):
    gate, entered = held_model
    server = start_target(loaded["target"], max_pending=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = dsd_pb2_grpc.TargetStub(channel)
    try:
        inflight = [stub.Verify.future(dsd_pb2.VerifyRequest(
            session_id=f"s{i}", committed_len=3, context=[1, 2, 3], draft_tokens=[4]), timeout=30) for i in range(2)]
        assert entered.wait(10)
        wait_for(lambda: server.servicer._pending == 2, 10, "both rounds admitted", interval_s=0.01)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            _verify(stub, "third")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-pending" in err.value.details()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert stub.Info(dsd_pb2.InfoRequest(), timeout=5).max_window > 0
        assert not stub.CloseSession(dsd_pb2.CloseSessionRequest(session_id="nobody"), timeout=5).existed
        assert time.monotonic() - t0 < 5  # none of it waited for the held forward pass
        assert not any(f.done() for f in inflight)
        gate.set()
        assert all(f.result().next_token >= 0 for f in inflight)
        assert _verify(stub, "third").next_token >= 0  # capacity again once the rounds finished
    finally:
        channel.close()
        server.stop(0)
