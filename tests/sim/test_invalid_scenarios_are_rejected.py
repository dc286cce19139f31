"""Invalid scenarios are refused with the bad field's path; the CLI exits 2 and prints it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dsd_cli.main import app
from dsd_sim import scenario

CASES = [
    ({"mode": "speculative"}, "mode: Input should be"),
    ({"duration_s": 0}, "duration_s: Input should be greater than 0"),
    ({"duration_s": 10, "warmup_s": 20}, "warmup_s must be < duration_s"),
    ({"network": {"rtt_ms": {"mean": -1}}}, "network.rtt_ms.mean"),
    ({"network": {"loss": 1.5}}, "network.loss"),
    ({"network": {"rtt_ms": {"kind": "uniform", "mean": 1, "low": 5, "high": 2}}}, "network.rtt_ms"),
    ({"drafts": {"tiers": [{"fraction": 0.5, "step_ms": 10}]}}, "drafts: Value error, tier fractions must sum to 1"),
    ({"drafts": {"count": 0}}, "drafts.count"),
    ({"gamma": {"value": 12}}, "gamma: Value error, value (12) must lie within [min 1, max 8]"),
    ({"gamma": {"policy": "mlp"}}, "gamma.policy"),
    ({"acceptance": {"alpha": 1.2}}, "acceptance.alpha"),
    ({"acceptance": {"kind": "trace"}}, "acceptance: Value error, trace acceptance needs file or alpha_by_position"),
    ({"workload": {"kind": "trace"}}, "workload: Value error, trace workload needs file"),
    ({"workload": {"rate_per_s": 0}}, "workload.rate_per_s"),
    ({"targets": {"batching": {"max_batch": 0}}}, "targets.batching.max_batch"),
    ({"routing": "least_loaded"}, "routing"),
    ({"self_drafting": {"window_shares": [0.5, 0.5]}},
     "self_drafting: Value error, self-drafted windows need alpha_by_position"),
    ({"self_drafting": {"window_shares": [0, 0]}}, "self_drafting: Value error, window_shares needs a positive"),
    ({"netwrok": {}}, "netwrok: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("doc", "message"), CASES, ids=[m.split(":")[0] for _, m in CASES])
def test_rejected_with_the_field_named(doc, message):
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.from_dict(doc)
    assert message in str(e.value)


def test_overrides_are_validated_too():
    with pytest.raises(scenario.ScenarioError, match=r"network\.jitter_ms"):
        scenario.from_dict({}, {"network.jitter_ms": -2})


def test_cli_reports_the_field_and_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("mode: pipelined\nnetwork: {rtt_ms: {mean: -5}}\n")
    result = CliRunner().invoke(app, ["sim", "run", str(path)])
    assert result.exit_code == 2
    assert "network.rtt_ms.mean" in result.output


def test_cli_prints_the_table_and_writes_metrics_json(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: tiny\nduration_s: 5\ndrafts: {count: 2}\nworkload: {output_tokens: {mean: 16}}\n")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(app, ["sim", "run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "TTFT ms" in result.output and "throughput" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["tokens_total"] == metrics["tokens_requested"] > 0
    assert set(metrics["ttft_ms"]) == {"p50", "p95", "p99", "mean"} and metrics["gamma_by_second"]
