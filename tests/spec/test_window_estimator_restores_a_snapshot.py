"""A WindowEstimator restored from a snapshot decides as the measured one did, and live rounds take over."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dsd_spec import WindowEstimator


def _measured(rounds: int, accepted_of_4: int) -> WindowEstimator:
    est = WindowEstimator()
    for _ in range(rounds):
        est.observe(4, accepted_of_4, 0.004, 0.06)
    est.observe_wait(1, 0.05)
    return est


def test_a_restored_estimator_gives_the_same_goodput_and_window():
    measured = _measured(10, 3)
    restored = WindowEstimator()
    restored.restore(measured.snapshot(), max_rounds=16)
    assert restored.goodput(4, pipelined=False) == pytest.approx(measured.goodput(4, pipelined=False))
    assert restored.wait_model() == measured.wait_model()
    assert restored.acceptance.alpha_by_position(5) == pytest.approx(measured.acceptance.alpha_by_position(5))


def test_before_a_restore_nothing_is_known():
    assert WindowEstimator().goodput(4, pipelined=False) is None


def test_saved_acceptance_weighs_at_most_max_rounds_against_live_rounds():
    restored = WindowEstimator()
    restored.restore(_measured(500, 4).snapshot(), max_rounds=16)
    assert restored.acceptance.alpha_by_position(1)[0] > 0.9
    for _ in range(16):  # the workload changed: every first draft token rejected
        restored.observe(4, 0, 0.004, 0.06)
    assert restored.acceptance.alpha_by_position(1)[0] < 0.55


def test_a_snapshot_with_impossible_counts_or_times_is_refused():
    good = _measured(3, 2).snapshot()
    with pytest.raises(ValueError, match="position 1"):
        WindowEstimator().restore(replace(good, accepted=(5.0, *good.accepted[1:])), 16)
    with pytest.raises(ValueError, match="wait for 5 positions"):
        WindowEstimator().restore(replace(good, wait_s={**good.wait_s, 5: 0.0}), 16)
    with pytest.raises(ValueError, match="draft step"):
        WindowEstimator().restore(replace(good, step_s=-1.0), 16)
