"""DSD-Sim's model of the runtime's packed passes: per-sequence cost, host overhead per step, the gather wait,
and the hybrid mode (model-free rounds mixed with target-only steps)."""

from __future__ import annotations

import pytest

from dsd_sim import scenario, simulation


def _decode_doc(sessions: int, **targets: float) -> dict:
    """`sessions` target-only sessions arriving together, one token position each per pass: a closed form."""
    return {"duration_s": 0.5, "mode": "target_only", "drafts": {"count": sessions},
            "targets": {"verify_base_ms": 30, "verify_per_token_ms": 2, **targets},
            "network": {"rtt_ms": {"mean": 0}},
            "workload": {"kind": "closed", "prompt_tokens": {"mean": 8}, "output_tokens": {"mean": 400}}}


def _run(doc: dict, **overrides: object) -> dict:
    return simulation.run(scenario.from_dict(doc, overrides)).summary()


@pytest.mark.parametrize("sessions", [1, 4, 16])
def test_a_packed_decode_pass_costs_positions_plus_a_per_sequence_term(sessions):
    summary = _run(_decode_doc(sessions, per_sequence_ms=3))
    expected = 30 + 2 * sessions + 3 * (sessions - 1)
    assert summary["batch_sequences_mean"] == pytest.approx(sessions, rel=0.01)
    assert summary["tpot_ms"]["p50"] == pytest.approx(expected, rel=0.01)


def test_host_overhead_is_spent_outside_the_pass_on_every_step():
    alone = _run(_decode_doc(1))
    with_host = _run(_decode_doc(1, host_overhead_ms=20))
    assert alone["tpot_ms"]["p50"] == pytest.approx(32, rel=0.01)
    assert with_host["tpot_ms"]["p50"] == pytest.approx(52, rel=0.01)
    assert with_host["target_utilisation"] < 0.7 < alone["target_utilisation"]


def _hybrid_doc(gather_ms: float) -> dict:
    return {"duration_s": 5, "mode": "hybrid", "drafts": {"count": 8},
            "targets": {"verify_base_ms": 40, "verify_per_token_ms": 1, "host_overhead_ms": 1,
                        "batching": {"gather_ms": gather_ms}},
            "network": {"rtt_ms": {"mean": 1}, "jitter_ms": 1}, "acceptance": {"alpha": 0.7},
            "hybrid": {"target_only_share": 0.5},
            "workload": {"kind": "closed", "prompt_tokens": {"mean": 16}, "output_tokens": {"mean": 64}}}


def test_the_gather_wait_keeps_sessions_stepping_in_one_pass():
    apart, together = _run(_hybrid_doc(0)), _run(_hybrid_doc(5))
    assert together["batch_sequences_mean"] > 1.3 * apart["batch_sequences_mean"]
    assert together["throughput_tokens_per_s"] > apart["throughput_tokens_per_s"]


@pytest.mark.parametrize("share", [1.0, 0.0])
def test_hybrid_mode_mixes_target_only_steps_and_verify_rounds(share):
    summary = _run(_hybrid_doc(5), **{"hybrid.target_only_share": share})
    assert summary["tokens_total"] == summary["tokens_requested"]
    if share == 1.0:  # no round at all: every token is a target-only step
        assert summary["rounds"] == 0
    else:  # every step a round of gamma 4 at alpha 0.7: more than two tokens per round
        assert summary["rounds"] > 0 and summary["mean_accepted_length"] > 2


def test_host_work_done_by_one_process_serialises_across_sessions():
    doc = _decode_doc(8, host_overhead_ms=10, batching={"gather_ms": 5})
    parallel, one_process = _run(doc), _run(doc, **{"targets.host_concurrency": 1})
    # Unbounded: all 8 come back 10 ms after their pass and share the next one. One process: they come back
    # 10 ms apart, the gather catches few of them, and passes split.
    assert parallel["batch_sequences_mean"] == pytest.approx(8, rel=0.01)
    assert one_process["batch_sequences_mean"] < 6
    assert one_process["tpot_ms"]["p50"] > parallel["tpot_ms"]["p50"] + 2 * 10
