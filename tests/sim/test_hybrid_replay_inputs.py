"""DSD-Sim's inputs for replaying a measured hybrid run: a window distribution and the serving stack's time per
request and per verify round (bench/loop_sim.py gives them from the loop benchmark's own measurements)."""

from __future__ import annotations

import pytest

from dsd_sim import scenario, simulation

ONE_REQUEST = {  # one client, one request (arrivals stop at once), no network, a fixed pass cost
    "duration_s": 0.001, "mode": "hybrid", "drafts": {"count": 1},
    "targets": {"verify_base_ms": 30, "verify_per_token_ms": 2, "batching": {"max_batch": 1}},
    "network": {"rtt_ms": {"mean": 0}}, "acceptance": {"alpha": 0.6},
    "gamma": {"value": 1, "max": 8}, "hybrid": {"target_only_share": 0.3},
    "workload": {"kind": "closed", "prompt_tokens": {"mean": 32}, "output_tokens": {"mean": 400}},
}


def _run(**overrides) -> dict:
    return simulation.run(scenario.from_dict(ONE_REQUEST, overrides)).summary()


def test_every_round_proposes_a_window_drawn_from_the_shares():
    only_three = _run(**{"hybrid.window_shares": [0, 0, 1]})
    assert only_three["rounds"] > 50
    by_second = list(only_three["gamma_by_second"].values())
    assert set(by_second[:-1]) == {3.0} and by_second[-1] <= 3.0  # the last rounds stop at the answer's end
    mixed = _run(**{"hybrid.window_shares": [1, 0, 0, 1]})
    assert 2.2 < sum(mixed["gamma_by_second"].values()) / len(mixed["gamma_by_second"]) < 2.8
    assert set(_run()["gamma_by_second"].values()) == {1.0}  # unset: every round proposes gamma.value


def test_round_overhead_costs_each_verify_round_once():
    plain, slower = _run(), _run(**{"hybrid.round_overhead_ms": 10})
    assert slower["rounds"] == plain["rounds"] > 50
    assert slower["simulated_s"] - plain["simulated_s"] == pytest.approx(plain["rounds"] * 0.010)


@pytest.mark.parametrize("mode", ["hybrid", "target_only", "pipelined"])
def test_request_overhead_delays_the_first_token(mode):
    plain, slower = _run(mode=mode), _run(mode=mode, **{"targets.request_overhead_ms": 50})
    assert slower["simulated_s"] - plain["simulated_s"] == pytest.approx(0.050)


def test_window_shares_need_a_positive_entry():
    with pytest.raises(scenario.ScenarioError, match=r"hybrid\.window_shares: .*positive entry"):
        _run(**{"hybrid.window_shares": [0, 0]})
