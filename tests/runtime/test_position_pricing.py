"""The target's position price (dsd_runtime.target.pricing): fitted from its passes, zero for a lone session, and
sent to the drafts in every VerifyResponse of a real gRPC target."""

from __future__ import annotations

import random
import time

import grpc
import pytest

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.target.pricing import PositionPricing
from tests.support.runtime_fixtures import start_target
from tests.support.threads import results


def _passes(pricing: PositionPricing, sessions: int, n: int, slope_s: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    for _ in range(n):
        windows = [rng.choice([1, 1, 2, 4, 5]) for _ in range(sessions)]
        tokens = sum(windows)
        pricing(sessions, tokens, 0.060 + slope_s * tokens + 0.0005 * (sessions - 1) + rng.uniform(-0.002, 0.002))


def test_the_price_is_the_marginal_position_cost_times_the_other_sessions():
    pricing = PositionPricing()
    _passes(pricing, 8, 300, 0.003)
    assert pricing.marginal_token_s == pytest.approx(0.003, rel=0.25)
    assert pricing.sequences_per_pass == pytest.approx(8, rel=0.01)
    assert pricing.price_s() == pytest.approx(7 * 0.003, rel=0.25)


def test_a_lone_session_pays_nothing():
    pricing = PositionPricing()
    _passes(pricing, 1, 300, 0.003)
    assert pricing.price_s() == pytest.approx(0.0, abs=1e-9)
    assert PositionPricing().price_s() == 0.0  # nothing measured yet


def test_the_price_follows_the_load_down():
    pricing = PositionPricing()
    _passes(pricing, 16, 200, 0.003)
    loaded = pricing.price_s()
    _passes(pricing, 1, 300, 0.003, seed=1)
    assert loaded > 0.03 and pricing.price_s() < 0.01 * loaded


def test_passes_of_equal_size_keep_the_last_slope_and_prefills_are_left_out():
    pricing = PositionPricing()
    _passes(pricing, 4, 200, 0.002)
    slope = pricing.marginal_token_s
    for _ in range(50):
        pricing(4, 8, 0.08)  # all the same size: no new information about the slope
        pricing(1, 400, 2.0)  # a prefill: tokens per sequence far above any window
    assert pricing.marginal_token_s == pytest.approx(slope, rel=0.2)


@pytest.fixture
def compute_bound(loaded):
    """The tiny target's passes cost 2 ms per token on top of their real time, as a compute-bound target's do."""
    lm = loaded["target"].lm
    real = lm.forward_many

    def costly(items):
        out = real(items)
        time.sleep(0.002 * sum(len(item.token_ids) for item in items))  # the emulated compute, not a wait
        return out

    lm.forward_many = costly
    yield
    del lm.forward_many


def _rounds(port: int, sessions: int, rounds: int) -> list[float]:
    """`sessions` callers each verifying windows of 1..5 tokens, round after round; the prices they were told,
    session after session."""

    def run(i: int) -> list[float]:
        prices = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = dsd_pb2_grpc.TargetStub(channel)
            for r in range(rounds):
                window = [5 + (i + r) % 7 for _ in range(1 + (i + r) % 5)]
                response = stub.Verify(dsd_pb2.VerifyRequest(session_id=f"s{i}", committed_len=3, context=[1, 2, 3],
                                                             draft_tokens=window), timeout=30)
                prices.append(response.position_price_seconds)
        return prices

    return [price for session in results([lambda i=i: run(i) for i in range(sessions)]) for price in session]


def test_a_shared_target_tells_its_drafts_what_a_position_costs_the_others(loaded, compute_bound):
    server = start_target(loaded["target"])
    try:
        prices = _rounds(server.port, 6, 40)
        pricing = server.servicer.pricing
        assert pricing.marginal_token_s == pytest.approx(0.002, rel=0.5)
        assert pricing.sequences_per_pass > 1.5  # the six sessions shared passes
        assert prices[-1] > 0.0
        assert max(prices[-20:]) <= 0.002 * 1.5 * 5  # never more than the other five sessions' share
    finally:
        server.stop(0)


def test_a_session_alone_on_the_target_is_told_its_positions_cost_nothing(loaded, compute_bound):
    server = start_target(loaded["target"])
    try:
        assert set(_rounds(server.port, 1, 20)) == {0.0}
    finally:
        server.stop(0)
