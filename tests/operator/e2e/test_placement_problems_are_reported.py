"""When pods cannot be placed the status says why: the scheduler's reason, or that no edge node exists."""

from __future__ import annotations

import pytest

from tests.operator.e2e.conftest import sample

pytestmark = pytest.mark.cluster

EDGE_LABELS = {"node-role.kubernetes.io/edge": "", "dsd.dev/tier": "edge"}


def test_no_gpu_capacity_is_degraded_with_the_schedulers_reason(dsd):
    body = sample("minimal")
    body["spec"]["target"]["resources"] = {"limits": {"nvidia.com/gpu": 4}}
    dsd.create(body)
    degraded = dsd.wait_condition("smollm2", "Degraded", "True", reason="Unschedulable")
    assert "Insufficient nvidia.com/gpu" in degraded["message"]
    assert degraded["message"].startswith("target: ")
    ready = dsd.condition("smollm2", "Ready")
    assert ready["status"] == "False" and "Insufficient nvidia.com/gpu" in ready["message"]
    assert any(e.type == "Warning" and e.reason == "Unschedulable" for e in dsd.events())


def test_no_edge_nodes_is_reported_and_recovers(cluster, dsd):
    edge = [n.metadata.name for n in cluster.core.list_node(label_selector="dsd.dev/tier=edge").items]
    assert edge
    try:
        for node in edge:
            cluster.core.patch_node(node, {"metadata": {"labels": dict.fromkeys(EDGE_LABELS)}})
        dsd.create(sample("minimal"))
        cond = dsd.wait_condition("smollm2", "DraftReady", "False", reason="NoEdgeNodes")
        assert "no node is labelled node-role.kubernetes.io/edge or dsd.dev/tier=edge" in cond["message"]
        dsd.wait_condition("smollm2", "Degraded", "True", reason="NoEdgeNodes")
    finally:
        for node in edge:
            cluster.core.patch_node(node, {"metadata": {"labels": EDGE_LABELS}})
    dsd.wait_condition("smollm2", "Ready", "True", timeout_s=90)
