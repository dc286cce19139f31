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


def test_a_child_the_api_server_refuses_is_degraded_with_its_message_and_a_warning(cluster, dsd):
    """A node port another Service holds: the draft's Service cannot be applied; the rest still is."""
    taken = cluster.core.create_namespaced_service(dsd.namespace, {
        "metadata": {"name": "holder"}, "spec": {"type": "NodePort", "selector": {"app": "none"},
                                                 "ports": [{"port": 80}]}})
    port = taken.spec.ports[0].node_port
    body = sample("minimal")
    body["spec"]["api"] = {"serviceType": "NodePort", "nodePort": port}
    dsd.create(body)
    degraded = dsd.wait_condition("smollm2", "Degraded", "True", reason="ApplyFailed")
    assert "Service/smollm2-draft" in degraded["message"] and "already allocated" in degraded["message"]
    assert any(e.type == "Warning" and e.reason == "ApplyFailed" and "already allocated" in e.message
               for e in dsd.events())
    assert cluster.apps.read_namespaced_deployment("smollm2-target", dsd.namespace), "the other children exist"
    cluster.core.delete_namespaced_service("holder", dsd.namespace)
    dsd.wait_condition("smollm2", "Degraded", "False", timeout_s=90)
