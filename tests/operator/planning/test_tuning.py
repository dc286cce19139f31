"""The speculation decision: goodput-optimal window one step at a time, deadband, dwell, mode off and probes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dsd_operator.api import v1alpha1 as api
from dsd_operator.planning import tuning
from dsd_operator.planning.signals import Signals

NOW = 10_000.0
# Target compute on this CPU (ms by positions verified, bf16 one thread, from the issue): 40.7 / 59.9 / 59.3 / ...
VERIFY = ((1, 0.040), (2, 0.045), (3, 0.048), (5, 0.050), (9, 0.055), (17, 0.066))


def _spec(**autotune: Any) -> api.DSDDeploymentSpec:
    return api.DSDDeploymentSpec.model_validate({
        "target": {"model": {"uri": "builtin:x"}},
        "speculation": {"gamma": 4, "gammaMin": 1, "gammaMax": 8, "pipelined": False},
        "autotune": {"minDwellSeconds": 60, "probeAfterSeconds": 120, **autotune}})


def _signals(alpha: float, rtt_s: float = 0.0, rounds: float = 10.0) -> Signals:
    compute = 0.05
    return Signals(sampled_at="t", targets_up=1, drafts_up=1, tokens_per_s=30.0, rounds_per_s=rounds,
                   # Consistent with the conditional alphas: E[accepted per round] = alpha + alpha^2 + ...
                   proposed_per_s=4 * rounds, accepted_per_s=rounds * sum(alpha**i for i in range(1, 5)),
                   alpha_by_position=(alpha,) * 4,
                   draft_step_s=None, verify_s_by_positions=VERIFY, round_trip_s=compute + rtt_s, compute_s=compute)


def _previous(gamma: int = 4, mode: str = tuning.SPECULATE, age_s: float = 600.0, probe: int = 0,
              reason: str = tuning.Why.OPTIMAL) -> tuning.Speculation:
    return tuning.Speculation(gamma, mode, reason, "", NOW - age_s, probe)


@pytest.mark.parametrize(("alpha", "rtt_s", "step_s", "gamma", "mode", "reason"), [
    (0.95, 0.0, None, 5, "speculate", "WindowRaised"),  # grounded prompts: a longer window pays, one step
    (0.55, 0.0, 0.01, 3, "speculate", "WindowLowered"),  # a draft model whose acceptance falls: shorter window
    (0.6, 0.0, None, 4, "speculate", "WindowOptimal"),  # the same acceptance, model-free (free to propose)
    (0.1, 0.0, None, 4, "off", "SpeculationDoesNotPay"),  # open chat with nothing to look up: the target alone
    (0.8, 0.200, None, 4, "off", "SpeculationDoesNotPay"),  # a round trip far above the crossover
])
def test_the_window_follows_acceptance_and_round_trip(alpha, rtt_s, step_s, gamma, mode, reason):
    d = tuning.decide(_spec(), replace(_signals(alpha, rtt_s), draft_step_s=step_s), _previous(), NOW)
    assert (d.gamma, d.mode, d.reason) == (gamma, mode, reason)
    if (gamma, mode) != (4, "speculate"):
        assert d.since == NOW


def test_rounds_measured_faster_than_the_target_alone_keep_speculation_on():
    """A per-round proposer (hybrid) drafts only where it pays: its pooled acceptance predicts a loss, but the
    rounds it does run deliver more than the target alone, so the loop must not switch the fleet off."""
    signals = replace(_signals(0.1), accepted_per_s=30.0, round_trip_s=0.06)  # 4 tokens per 60 ms round
    assert tuning.measured_speculating_tokens_per_s(signals, 4, True) == pytest.approx(4.0 / 0.06)
    d = tuning.decide(_spec(), signals, _previous(), NOW)
    assert d.mode == "speculate"
    assert "rounds measured 66.7" in d.message
    slow = replace(signals, round_trip_s=0.6)  # the same rounds over a slow link: off
    assert tuning.decide(_spec(), slow, _previous(), NOW).mode == "off"


@pytest.mark.parametrize(("gap_s", "mode"), [
    (None, "off"),   # no pace measured: prediction and rounds decide
    (0.02, "speculate"),  # requests got 50 tokens/s, above the target alone's 25: not switched off
    (0.06, "off"),   # 16.7 tokens/s delivered: speculation really loses
])
def test_the_pace_requests_received_has_the_last_word_on_switching_off(gap_s, mode):
    """The prediction and the rounds lose (slow link), but a hybrid that streams target-only where drafting does
    not pay may still deliver more than the target alone: then the loop leaves speculation on."""
    slow = replace(_signals(0.1), accepted_per_s=30.0, round_trip_s=0.6, token_gap_s=gap_s)
    d = tuning.decide(_spec(), slow, _previous(), NOW)
    assert d.mode == mode, d.message
    if gap_s:
        assert f"delivered {1 / gap_s:.1f}" in d.message


def test_small_gains_inside_the_deadband_keep_the_window():
    spec = _spec(deadbandPercent=100)
    d = tuning.decide(spec, _signals(0.95), _previous(), NOW)
    assert (d.gamma, d.reason) == (4, tuning.Why.OPTIMAL)


def test_no_change_within_the_dwell_time():
    d = tuning.decide(_spec(), _signals(0.95), _previous(age_s=30), NOW)
    assert (d.gamma, d.mode, d.reason) == (4, "speculate", tuning.Why.DWELL)
    assert d.since == NOW - 30


def test_without_speculation_measured_the_decision_stays():
    signals = replace(_signals(0.9), rounds_per_s=0.0, proposed_per_s=0.0)
    d = tuning.decide(_spec(), signals, _previous(gamma=6), NOW)
    assert (d.gamma, d.mode, d.reason) == (6, "speculate", tuning.Why.NO_SPECULATION)


def test_off_waits_then_probes_and_backs_off_when_the_probe_does_not_pay():
    spec = _spec()
    off = tuning.decide(spec, _signals(0.1), _previous(), NOW)
    assert (off.mode, off.probe_after_s) == ("off", 120)
    waiting = tuning.decide(spec, _signals(0.1), off, NOW + 60)
    assert (waiting.mode, waiting.reason) == ("off", tuning.Why.OFF_WAITING)
    probe = tuning.decide(spec, _signals(0.1), off, NOW + 121)
    assert (probe.mode, probe.reason, probe.since) == ("speculate", tuning.Why.PROBING, NOW + 121)
    dwelling = tuning.decide(spec, _signals(0.1), probe, NOW + 150)
    assert dwelling.mode == "speculate"  # the probe is measured for the dwell time
    again = tuning.decide(spec, _signals(0.1), dwelling, NOW + 190)
    assert (again.mode, again.probe_after_s) == ("off", 240)


def test_a_probe_that_pays_stays_on_and_resets_the_backoff():
    spec = _spec()
    probe = tuning.Speculation(4, tuning.SPECULATE, tuning.Why.PROBING, "", NOW - 61, 480)
    d = tuning.decide(spec, _signals(0.8), probe, NOW)
    assert d.mode == "speculate" and d.probe_after_s == 0
    off = tuning.decide(spec, _signals(0.1), replace(d, since=NOW - 61), NOW)
    assert off.probe_after_s == 120


def test_backoff_is_capped():
    probe = tuning.Speculation(4, tuning.SPECULATE, tuning.Why.PROBING, "", NOW - 61, 120 * 16)
    assert tuning.decide(_spec(), _signals(0.1), probe, NOW).probe_after_s == 120 * 16


def test_bounds_changed_by_the_user_apply_at_once():
    spec = api.DSDDeploymentSpec.model_validate({"target": {"model": {"uri": "builtin:x"}},
                                                 "speculation": {"gamma": 2, "gammaMax": 3}})
    d = tuning.decide(spec, _signals(0.9), _previous(gamma=6, age_s=1), NOW)
    assert (d.gamma, d.reason) == (3, tuning.Why.BOUNDS)


def test_a_users_new_gamma_wins_over_the_loops_choice():
    previous = replace(_previous(gamma=7, age_s=1), spec_gamma=3)
    d = tuning.decide(_spec(), _signals(0.95), previous, NOW)
    assert (d.gamma, d.reason, d.spec_gamma) == (4, tuning.Why.SPEC, 4)
    assert tuning.decide(_spec(), _signals(0.95), replace(d, since=NOW - 600), NOW).spec_gamma == 4


def test_the_crossover_round_trip_is_where_speculation_stops_paying():
    spec = _spec()
    rtt = tuning.crossover_rtt_s(spec, _signals(0.8))
    assert rtt is not None and 0.01 < rtt < 1.0
    below = tuning.decide(spec, _signals(0.8, rtt_s=0.8 * rtt), _previous(), NOW)
    above = tuning.decide(spec, _signals(0.8, rtt_s=1.3 * rtt), _previous(), NOW)
    assert below.mode == "speculate" and above.mode == "off"
    assert tuning.crossover_rtt_s(spec, replace(_signals(0.8), verify_s_by_positions=())) is None


def test_the_target_alone_is_its_measured_stream_rate_when_there_is_one():
    # Compute alone predicts 25 tokens/s; streams measured at 8 tokens/s: speculating at ~22 tokens/s pays.
    slow_streams = replace(_signals(0.1), target_only_token_s=0.125)
    assert tuning.decide(_spec(), _signals(0.1), _previous(), NOW).mode == "off"
    assert tuning.decide(_spec(), slow_streams, _previous(), NOW).mode == "speculate"


@pytest.mark.parametrize(("policy", "start"), [("static", 4), ("adaptive", 8)])
def test_adaptive_drafts_start_unthrottled_and_static_ones_at_their_gamma(policy, start):
    """An adaptive draft picks each round's window itself: the loop's bound starts at gammaMax, not at gamma."""
    def spec(gamma: int) -> api.DSDDeploymentSpec:
        return api.DSDDeploymentSpec.model_validate({"target": {"model": {"uri": "builtin:x"}}, "speculation": {
            "gamma": gamma, "gammaMax": 8, "policy": policy}})

    d = tuning.initial(spec(4), NOW)
    assert (d.gamma, d.mode, d.reason, d.spec_gamma) == (start, "speculate", "Initial", 4)
    again = tuning.decide(spec(2), _signals(0.6), d, NOW + 600)  # a user's new gamma restarts from the same place
    start = 2 if policy == "static" else start
    assert (again.gamma, again.reason) == (start, "SpecChanged")
