"""Round time, goodput, gamma choice, capacity gain and acceptance statistics."""

import pytest

from dsd_spec import (
    AcceptanceStats,
    RoundCosts,
    VerifyCostModel,
    WindowBounds,
    choose_gamma,
    costs,
    draft_ahead_pays,
)
from dsd_spec.capacity import offload_capacity_gain


def test_verify_cost_model_interpolates_and_extrapolates():
    model = VerifyCostModel(((1, 0.086), (2, 0.110), (3, 0.130), (5, 0.150), (9, 0.165), (17, 0.205)))
    assert model(2) == pytest.approx(0.110)
    assert model(4) == pytest.approx((0.130 + 0.150) / 2)
    assert model(25) == pytest.approx(0.205 + (0.205 - 0.165) / 8 * 8)
    # the notes' measured CPU points are not monotone (t_v(3) > t_v(5)): the envelope caps the smaller windows
    measured = VerifyCostModel(((1, 0.086), (2, 0.154), (3, 0.178), (5, 0.137), (9, 0.165), (17, 0.205)))
    assert measured(1) == pytest.approx(0.086)
    assert measured(2) == measured(3) == measured(4) == pytest.approx(0.137)
    with pytest.raises(ValueError, match="increasing"):
        VerifyCostModel(((3, 0.1), (2, 0.1)))


def test_blocking_round_time_is_draft_steps_plus_rtt_plus_verify():
    c = RoundCosts(draft_step_s=0.01, verify=VerifyCostModel.affine(0.05, 0.002), rtt_s=0.02)
    assert c.blocking_s(4) == pytest.approx(4 * 0.01 + 0.02 + 0.05 + 5 * 0.002)


def test_pipelined_never_slower_than_blocking_and_equal_when_nothing_survives():
    c = RoundCosts(draft_step_s=0.01, verify=VerifyCostModel.constant(0.05), rtt_s=0.02)
    for alpha in (0.0, 0.5, 0.9):
        for g in (1, 3, 6):
            assert costs.round_time_s(c, [alpha], g, True) <= costs.round_time_s(c, [alpha], g, False)
    assert costs.round_time_s(c, [0.0], 3, True) == pytest.approx(c.blocking_s(3))


def test_goodput_with_gamma_zero_is_target_only_decoding():
    c = RoundCosts(draft_step_s=0.01, verify=VerifyCostModel.constant(0.08), rtt_s=0.02)
    assert costs.goodput_tokens_per_s(c, [0.7], 0) == pytest.approx(1 / 0.10)


def test_choose_gamma_grows_with_acceptance_and_respects_bounds():
    c = RoundCosts(draft_step_s=0.005, verify=VerifyCostModel.constant(0.1), rtt_s=0.0)
    bounds = WindowBounds(1, 8)
    low = choose_gamma(c, [0.3], bounds)
    high = choose_gamma(c, [0.9], bounds)
    assert low < high <= 8
    assert choose_gamma(c, [0.99], WindowBounds(2, 3)) == 3


def test_choose_gamma_keeps_current_within_hysteresis():
    c = RoundCosts(draft_step_s=0.01, verify=VerifyCostModel.constant(0.1), rtt_s=0.0)
    best = choose_gamma(c, [0.8], WindowBounds(1, 12))
    near = best + 1
    assert choose_gamma(c, [0.8], WindowBounds(1, 12), current=near, hysteresis=0.5) == near
    assert choose_gamma(c, [0.8], WindowBounds(1, 12), current=near, hysteresis=0.0) == best


def test_window_bounds_validation():
    with pytest.raises(ValueError, match="gamma_min"):
        WindowBounds(5, 2)


def test_offload_capacity_gain_formula():
    assert offload_capacity_gain(4, 0.01, VerifyCostModel.constant(0.04)) == pytest.approx(2.0)


def test_acceptance_stats_learns_per_position_rates():
    stats = AcceptanceStats(max_positions=4, decay=1.0, prior_weight=0.0)
    for _ in range(100):
        stats.observe(gamma=4, num_accepted=4)
    for _ in range(100):
        stats.observe(gamma=4, num_accepted=1)
    a = stats.alpha_by_position()
    assert a[0] == pytest.approx(1.0)
    assert a[1] == pytest.approx(0.5)
    assert a[2] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.observe(gamma=2, num_accepted=3)


def test_drafting_ahead_pays_only_when_drafts_are_likely_to_survive():
    assert draft_ahead_pays(p_survive=0.5, wait_s=0.050, gamma=4, draft_step_s=0.010)
    assert not draft_ahead_pays(p_survive=0.001, wait_s=0.050, gamma=4, draft_step_s=0.010)
    # a short wait saves little: with the answer back after half a step, nothing is worth drafting
    assert not draft_ahead_pays(p_survive=0.9, wait_s=0.004, gamma=4, draft_step_s=0.010)



def test_max_step_keeps_the_window_within_a_trust_region():
    costs = RoundCosts(0.001, VerifyCostModel.constant(0.05), 0.0)  # cheap drafts, flat verify: wants gamma_max
    bounds = WindowBounds(1, 8)
    assert choose_gamma(costs, [0.95] * 9, bounds, current=2) == 8
    assert choose_gamma(costs, [0.95] * 9, bounds, current=2, max_step=1) == 3
    assert choose_gamma(costs, [0.95] * 9, bounds, current=8, max_step=1) == 8


def test_verify_cost_never_grows_when_fewer_positions_are_verified():
    measured = VerifyCostModel(((3, 0.113), (4, 0.085), (5, 0.094)))  # what this CPU really measures
    assert measured(3) == measured(4) == 0.085  # capped by the cheaper, larger window
    assert measured(2) <= measured(3) <= measured(5)
    assert measured(9) > measured(5)  # extrapolation upwards is untouched
