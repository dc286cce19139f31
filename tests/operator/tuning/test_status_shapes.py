"""What the metrics loop writes into status fits the CRD's status schema (the API server prunes unknown fields:
a field missing from the schema is silently lost, and a decision that depends on it never completes)."""

from __future__ import annotations

from dsd_operator.api import v1alpha1 as api
from dsd_operator.planning import moving, tuning
from dsd_operator.planning.signals import Signals, Site
from dsd_operator.tuning import loop


def test_every_field_the_loop_writes_is_in_the_status_schema():
    signals = Signals(sampled_at="2026-12-02T00:00:00Z", targets_up=1, drafts_up=1, tokens_per_s=3.0,
                      rounds_per_s=1.0, proposed_per_s=4.0, accepted_per_s=2.0, tpot_p95_s=0.05, ttft_p95_s=0.2,
                      rtt_p90_s=0.1, target_busy=0.5, sites=(Site("edge-0", 0.12, 1.0),))
    decision = tuning.Speculation(5, tuning.OFF, tuning.Why.DOES_NOT_PAY, "m", 1_700_000_000.0, 120, 4)
    avoided = [moving.Avoided("edge-1", "LeaseExpired", 1_700_000_000.0, healthy_since=1_700_000_010.0)]
    status = {"speculation": loop.speculation_status(decision), "metrics": loop.metrics_status(signals),
              "placement": {"avoidedNodes": loop.avoided_status(avoided)},
              "scaling": {"target": {"lastScaleTime": "2026-12-02T00:00:00Z", "reason": "SloViolated", "message": "m"}}}
    parsed = api.DSDDeploymentStatus.model_validate(status)  # extra="forbid": an unknown field fails here
    assert parsed.placement is not None and parsed.placement.avoided_nodes[0].healthy_since
    assert parsed.speculation is not None and parsed.speculation.spec_gamma == 4
    assert parsed.metrics is not None and parsed.metrics.acceptance == 0.5
    assert parsed.metrics.sites[0].round_trip_ms == 120.0


def test_an_edge_clusters_loop_fields_are_in_the_status_schema():
    signals = Signals(sampled_at="2026-12-02T00:00:00Z", targets_up=1, drafts_up=1, tokens_per_s=3.0,
                      rounds_per_s=1.0, proposed_per_s=4.0, accepted_per_s=2.0, sites=(Site("site-0", 0.02, 1.0),))
    decision = tuning.Speculation(6, tuning.SPECULATE, tuning.Why.DOES_NOT_PAY, "m", 1_700_000_000.0, 120, 4)
    avoided = [moving.Avoided("site-1", "NotReady", 1_700_000_000.0)]
    entry = {"name": "site-a", "reachable": True, "message": "m", "desiredReplicas": 1, "readyReplicas": 1,
             "speculation": loop.speculation_status(decision), "metrics": loop.metrics_status(signals),
             "metricsAvailable": True, "metricsMessage": "1 draft pod scraped",
             "avoidedNodes": loop.avoided_status(avoided)}
    parsed = api.DSDDeploymentStatus.model_validate({"clusters": [entry]})
    assert parsed.clusters is not None
    edge = parsed.clusters[0]
    assert edge.speculation is not None and edge.speculation.gamma == 6
    assert edge.metrics is not None and edge.metrics.sites[0].node == "site-0"
    assert edge.avoided_nodes[0].reason == "NotReady" and edge.metrics_available
