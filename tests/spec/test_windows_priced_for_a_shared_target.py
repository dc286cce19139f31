"""A window on a target shared by many sessions is priced with what its positions cost the others
(dsd_spec.priced_wait), so it pays only when it raises the target's total rate, not just its own session's."""

from __future__ import annotations

import random

import pytest

from dsd_spec import WindowBounds, WindowEstimator, best_prefix, priced_wait


def _total_rate(sessions: int, pass_s: float, slope_s: float, window: int, expected_tokens: float) -> tuple[
        float, float]:
    """Tokens/s of a target whose `sessions` decode one token per pass, before and after one session sends
    `window` proposals yielding `expected_tokens` per round (pass cost grows by slope_s per position)."""
    before = sessions / pass_s
    after = (sessions - 1 + expected_tokens) / (pass_s + slope_s * window)
    return before, after


@pytest.mark.parametrize(("sessions", "window", "expected_tokens"), [
    (1, 4, 1.5), (1, 4, 1.2), (8, 4, 2.0), (8, 4, 1.3), (8, 2, 1.6), (16, 4, 3.5), (16, 8, 2.0), (4, 1, 1.1)])
def test_a_priced_window_pays_exactly_when_the_target_total_rate_grows(sessions, window, expected_tokens):
    pass_s, slope_s = 0.100, 0.004  # a compute-bound CPU pass: every position costs 4 ms
    before, after = _total_rate(sessions, pass_s, slope_s, window, expected_tokens)
    price = slope_s * (sessions - 1)
    own_wait = pass_s + slope_s * window  # what the session itself waits for window + 1 positions
    pays = expected_tokens / priced_wait(own_wait, window + 1, price) > 1 / priced_wait(pass_s, 1, price)
    assert pays == (after > before)


def test_one_position_is_never_charged():
    assert priced_wait(0.05, 1, 0.01) == 0.05
    assert priced_wait(0.05, 5, 0.01) == pytest.approx(0.09)


def test_the_estimator_charges_the_price_in_its_wait_model_and_window_choice():
    est = WindowEstimator()
    for k, wait in [(1, 0.100), (2, 0.104), (3, 0.108), (5, 0.116)]:
        est.observe_wait(k, wait)
    alone = est.wait_model()
    est.observe_price(0.028)  # 8 sessions per pass, 4 ms per position
    shared = est.wait_model()
    assert shared(1) == pytest.approx(alone(1))
    assert shared(5) == pytest.approx(alone(5) + 4 * 0.028)
    # A candidate whose tokens are each 30 % likely: worth sending alone, not on the shared target.
    assert best_prefix([0.3, 0.3, 0.3, 0.3], 1.0, alone)[0] > 0
    assert best_prefix([0.3, 0.3, 0.3, 0.3], 1.0, shared)[0] == 0
    # A near-certain one (a quote of the prompt) still pays there.
    assert best_prefix([0.99, 0.99, 0.99, 0.99], 1.0, shared)[0] == 4
    est.observe_price(-1.0)  # never a discount
    assert est.position_price_s == 0.0


def test_the_model_window_shrinks_when_the_target_is_shared():
    def estimator(price: float) -> WindowEstimator:
        rng = random.Random(0)
        est = WindowEstimator()
        for _ in range(400):
            n = 0
            while n < 8 and rng.random() < 0.8:  # each position 80 % likely
                n += 1
            est.observe(8, n, 0.002, 0.100 + 0.004 * 8)
        for k in range(1, 10):
            est.observe_wait(k, 0.100 + 0.004 * (k - 1))
        est.observe_price(price)
        return est

    bounds = WindowBounds(1, 8)
    alone, shared = estimator(0.0), estimator(0.060)
    assert shared.goodput(4, False) < alone.goodput(4, False)
    assert shared.best_gamma(bounds, False, 4) < 4 <= alone.best_gamma(bounds, False, 4)
