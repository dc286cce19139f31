"""DSD-Sim: determinism, token conservation, closed-form limits, admission, outages, trace replay."""

from __future__ import annotations

import json

import pytest

from dsd_sim import scenario, simulation
from dsd_spec import RoundCosts, VerifyCostModel, expected_tokens_per_round, round_time_s

BASE = {
    "duration_s": 20, "drafts": {"count": 8}, "targets": {"count": 2},
    "network": {"rtt_ms": {"kind": "normal", "mean": 20, "std": 5}, "jitter_ms": 2, "bandwidth_mbps": 50},
    "acceptance": {"alpha": 0.75, "decay": 0.97},
    "workload": {"kind": "closed", "prompt_tokens": {"kind": "uniform", "low": 16, "high": 256, "mean": 0},
                 "output_tokens": {"kind": "lognormal", "mean": 96, "std": 40}, "think_s": {"kind": "exponential",
                                                                                          "mean": 0.5}},
}


def _run(doc: dict, **overrides) -> dict:
    return simulation.run(scenario.from_dict(doc, overrides)).summary()


def _without_wall(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_s"}


@pytest.mark.parametrize("mode", scenario.MODES)
def test_same_seed_same_result_other_seed_other_result(mode):
    a, b = _run(BASE, mode=mode), _run(BASE, mode=mode)
    assert _without_wall(a) == _without_wall(b)
    assert _without_wall(_run(BASE, mode=mode, seed=1)) != _without_wall(a)


@pytest.mark.parametrize("mode", scenario.MODES)
@pytest.mark.parametrize("policy", ["static", "analytic", "adaptive"])
def test_every_requested_token_is_delivered_exactly_once(mode, policy):
    s = _run(BASE, mode=mode, **{"gamma.policy": policy})
    assert s["tokens_requested"] > 1000
    assert s["tokens_total"] == s["tokens_requested"]
    assert s["requests"]["completed"] == s["requests"]["arrived"] > 0


def _limit_doc(mode: str, gamma: int = 4) -> dict:
    """One draft, one target, no network, no batching window, fixed acceptance: the closed form applies."""
    return {"duration_s": 1, "mode": mode, "drafts": {"tiers": [{"fraction": 1, "step_ms": 10}]},
            "targets": {"verify_base_ms": 30, "verify_per_token_ms": 2, "fused_draft_step_ms": 10},
            "network": {"rtt_ms": {"mean": 0}}, "acceptance": {"alpha": 0.8},
            "gamma": {"value": gamma, "max": max(8, gamma)},
            "workload": {"prompt_tokens": {"mean": 8}, "output_tokens": {"mean": 20000}}}


@pytest.mark.parametrize("mode", ["blocking", "fused", "target_only"])
def test_no_network_no_batching_fixed_acceptance_matches_the_closed_form(mode):
    gamma = 4
    summary = _run(_limit_doc(mode, gamma))
    verify = VerifyCostModel.affine(0.030, 0.002)
    if mode == "target_only":
        expected_tpot = verify(1)
    else:  # fused: the draft's steps run on the target, exactly like blocking drafting with RTT 0
        costs = RoundCosts(0.010, verify, 0.0)
        alphas = [0.8] * (gamma + 1)
        expected_tpot = round_time_s(costs, alphas, gamma, False) / expected_tokens_per_round(alphas, gamma)
    assert summary["tpot_ms"]["mean"] == pytest.approx(expected_tpot * 1000, rel=0.02)


def test_a_self_drafting_target_alone_matches_the_closed_form():
    """Target-only steps that always verify 4 self-drafted tokens at alpha 0.8: a blocking round with a free
    draft and no network (E[tokens] / t_v(5) per token)."""
    doc = _limit_doc("target_only")
    doc["self_drafting"] = {"window_shares": [0, 0, 0, 0, 1], "alpha_by_position": [0.8]}
    summary = _run(doc)
    alphas = [0.8] * 5
    verify = VerifyCostModel.affine(0.030, 0.002)
    expected_tpot = verify(5) / expected_tokens_per_round(alphas, 4)
    assert summary["tpot_ms"]["mean"] == pytest.approx(expected_tpot * 1000, rel=0.02)
    assert summary["tokens_total"] == summary["tokens_requested"]


def test_pipelining_helps_when_the_link_is_slow():
    doc = {**_limit_doc("blocking"), "network": {"rtt_ms": {"mean": 40}}}
    blocking = _run(doc)["tpot_ms"]["mean"]
    pipelined = _run(doc, mode="pipelined")["tpot_ms"]["mean"]
    assert pipelined < 0.95 * blocking


def test_full_kv_cache_makes_sessions_wait_and_rejects_what_can_never_fit():
    s = _run(BASE, **{"targets.kv_capacity_tokens": 500, "targets.count": 1})
    assert s["requests"]["admission_waits"] > 0 and s["requests"]["rejected"] > 0
    assert s["tokens_total"] + s["tokens_rejected"] == s["tokens_requested"]


def test_an_outage_stalls_requests_in_flight():
    calm = _run(BASE)
    stormy = _run(BASE, **{"network.outages": [{"start_s": 5, "duration_s": 3}]})
    assert calm["ttft_ms"]["p95"] < 500 and stormy["ttft_ms"]["p95"] > 2000  # arrivals in the outage wait
    assert stormy["latency_s"]["mean"] > calm["latency_s"]["mean"]
    assert stormy["tokens_total"] == stormy["tokens_requested"]


def test_trace_workload_replays_every_request(tmp_path):
    trace = tmp_path / "trace.jsonl"
    rows = [{"arrival_s": 0.1 * i, "prompt_tokens": 32, "output_tokens": 10 + i, "draft": i} for i in range(12)]
    trace.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = _run({**BASE, "workload": {"kind": "trace", "file": str(trace)}})
    assert s["requests"]["completed"] == 12
    assert s["tokens_total"] == sum(r["output_tokens"] for r in rows)


def test_a_trace_clients_requests_run_one_after_another(tmp_path):
    """Rows with the same client wait for that client's previous answer; without one they all start at once."""
    def replay(rows: list[dict]) -> dict:
        trace = tmp_path / "trace.jsonl"
        trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return _run({**BASE, "targets": {"count": 1}, "drafts": {"count": 1},
                     "workload": {"kind": "trace", "file": str(trace)}})

    rows = [{"arrival_s": 0.0, "prompt_tokens": 32, "output_tokens": 20, "draft": 0} for _ in range(4)]
    together = replay(rows)
    in_turn = replay([{**r, "client": "a"} for r in rows])
    assert in_turn["requests"]["completed"] == together["requests"]["completed"] == 4
    assert in_turn["tokens_total"] == together["tokens_total"] == 80
    assert in_turn["batch_sequences_mean"] == 1.0 < together["batch_sequences_mean"]
    assert together["simulated_s"] < in_turn["simulated_s"]


def test_a_trace_rows_profile_is_how_that_request_drafts(tmp_path):
    """Rows naming a quoting profile (hybrid: high acceptance, the target self-drafting) and an open-chat one
    (nothing drafts) in one run: acceptance and pass shapes follow each row; no profile is the scenario's own."""
    def replay(rows: list[dict]) -> dict:
        trace = tmp_path / "trace.jsonl"
        trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return _run({**BASE, "mode": "hybrid", "targets": {"count": 1}, "drafts": {"count": 1},
                     "network": {"rtt_ms": {"mean": 0}}, "acceptance": {"alpha": 0.3, "decay": 1.0},
                     "hybrid": {"target_only_share": 0.5},
                     "profiles": {"quote": {"acceptance": {"alpha": 0.95, "decay": 1.0},
                                            "self_drafting": {"window_shares": [0, 0, 0, 1],
                                                              "alpha_by_position": [0.95]}},
                                  "chat": {"hybrid": {"target_only_share": 1.0}},
                                  "own": {}},
                     "workload": {"kind": "trace", "file": str(trace)}})

    rows = [{"arrival_s": 0.0, "prompt_tokens": 32, "output_tokens": 60, "client": "a"} for _ in range(4)]
    quote, chat = replay([{**r, "profile": "quote"} for r in rows]), replay([{**r, "profile": "chat"} for r in rows])
    assert quote["tokens_total"] == chat["tokens_total"] == 240
    assert quote["acceptance"] > 0.9 and chat["rounds"] == 0, "chat never sends a window; quote's are accepted"
    assert quote["simulated_s"] < chat["simulated_s"] / 2, "quote verifies several tokens per pass"
    mixed = replay([{**r, "profile": "quote" if i % 2 else "chat"} for i, r in enumerate(rows)])
    assert quote["simulated_s"] < mixed["simulated_s"] < chat["simulated_s"]
    assert _without_wall(replay([{**r, "profile": "own"} for r in rows])) == _without_wall(replay(rows))
    with pytest.raises(ValueError, match="profile 'poem' is not in the scenario's profiles"):
        replay([{**rows[0], "profile": "poem"}])


def test_a_trace_rows_label_reports_that_class_of_requests_on_its_own(tmp_path):
    """A bimodal wave (quotes that verify many tokens per pass, chat that decodes token by token): each label's
    TPOT is its own requests', and the overall median is one of them, not a value between the classes."""
    trace = tmp_path / "trace.jsonl"
    rows = [{"arrival_s": 0.0, "prompt_tokens": 32, "output_tokens": 60, "client": str(i),
             "profile": "quote" if i % 2 else "chat", "label": "grounded" if i % 2 else "chat"} for i in range(6)]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = _run({**BASE, "mode": "hybrid", "targets": {"count": 1}, "drafts": {"count": 6},
              "network": {"rtt_ms": {"mean": 0}}, "acceptance": {"alpha": 0.3, "decay": 1.0},
              "profiles": {"quote": {"acceptance": {"alpha": 0.95, "decay": 1.0}},
                           "chat": {"hybrid": {"target_only_share": 1.0}}},
              "workload": {"kind": "trace", "file": str(trace)}})
    by_label = s["tpot_ms_by_label"]
    assert sorted(by_label) == ["chat", "grounded"]
    assert by_label["grounded"]["p95"] < by_label["chat"]["p50"], "quotes verify several tokens per pass"
    assert by_label["grounded"]["p50"] <= s["tpot_ms"]["p50"] <= by_label["chat"]["p50"]
    unlabelled = tmp_path / "plain.jsonl"
    plain = [{k: v for k, v in r.items() if k not in ("label", "profile")} for r in rows]
    unlabelled.write_text("".join(json.dumps(r) + "\n" for r in plain))
    assert _run({**BASE, "workload": {"kind": "trace", "file": str(unlabelled)}})["tpot_ms_by_label"] == {}


def test_measured_acceptance_trace_drives_acceptance(tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"alpha_by_position": [0.5, 0.4, 0.3]}))
    low = _run(BASE, **{"acceptance": {"kind": "trace", "file": str(profile)}})
    high = _run(BASE, **{"acceptance": {"kind": "trace", "alpha_by_position": [0.95]}})
    assert low["acceptance"] < 0.35 < 0.8 < high["acceptance"]


def test_adaptive_window_shrinks_gamma_when_drafts_are_rarely_accepted():
    s = _run(BASE, **{"gamma.policy": "adaptive", "gamma.value": 6, "acceptance.alpha": 0.1})
    late = sorted(g for second, g in s["gamma_by_second"].items() if 10 <= second < 20)
    assert late and late[len(late) // 2] < 2.5  # median; it moves one step per decision, from 6
