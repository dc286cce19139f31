"""Which nodes drafts avoid: stale leases or NotReady edge nodes, released after being healthy for the grace."""

from __future__ import annotations

from dsd_operator.planning.moving import Avoided, NodeHealth, avoided_nodes, slow_sites

GRACE = 30.0


def _nodes(edge1_lease: float | None = 5.0, edge1_ready: bool = True) -> list[NodeHealth]:
    return [NodeHealth("edge-0", True, 5.0, True), NodeHealth("edge-1", edge1_ready, edge1_lease, True),
            NodeHealth("gpu-0", False, 500.0, False)]


def test_a_stale_lease_or_not_ready_edge_node_is_avoided():
    assert [(a.node, a.reason) for a in avoided_nodes(_nodes(edge1_lease=45.0), [], GRACE, 100.0)] == [
        ("edge-1", "LeaseExpired")]
    assert [(a.node, a.reason) for a in avoided_nodes(_nodes(edge1_ready=False), [], GRACE, 100.0)] == [
        ("edge-1", "NotReady")]


def test_non_edge_and_healthy_nodes_are_not_avoided():
    assert avoided_nodes(_nodes(), [], GRACE, 100.0) == []


def test_a_recovered_node_is_released_only_after_the_grace():
    first = [Avoided("edge-1", "LeaseExpired", 50.0)]
    marked = avoided_nodes(_nodes(), first, GRACE, 100.0)
    assert marked == [Avoided("edge-1", "LeaseExpired", 50.0, healthy_since=100.0)]
    assert avoided_nodes(_nodes(), marked, GRACE, 120.0) == marked
    assert avoided_nodes(_nodes(), marked, GRACE, 131.0) == []


def test_a_relapse_resets_the_recovery():
    marked = [Avoided("edge-1", "LeaseExpired", 50.0, healthy_since=100.0)]
    assert avoided_nodes(_nodes(edge1_lease=60.0), marked, GRACE, 110.0) == [Avoided("edge-1", "LeaseExpired", 50.0)]


def test_every_edge_node_is_never_excluded():
    nodes = [NodeHealth("edge-0", False, 90.0, True), NodeHealth("edge-1", True, 90.0, True)]
    assert avoided_nodes(nodes, [], GRACE, 100.0) == []


def test_deleted_nodes_leave_the_list():
    assert avoided_nodes(_nodes(), [Avoided("edge-9", "NotReady", 1.0)], GRACE, 100.0) == []


def test_an_outlier_site_above_the_crossover_is_avoided_and_released_to_be_measured_again():
    slow = slow_sites({"edge-0": 0.010, "edge-1": 0.150}, crossover_s=0.080)
    assert slow == {"edge-1": 0.150}
    avoided = avoided_nodes(_nodes(), [], GRACE, 100.0, slow, release_s=120.0)
    assert [(a.node, a.reason) for a in avoided] == [("edge-1", "RttAboveCrossover")]
    assert avoided_nodes(_nodes(), avoided, GRACE, 200.0, {}, release_s=120.0) == avoided
    assert avoided_nodes(_nodes(), avoided, GRACE, 221.0, {}, release_s=120.0) == []


def test_every_site_slow_alike_is_the_target_not_a_link():
    assert slow_sites({"edge-0": 0.140, "edge-1": 0.150}, crossover_s=0.080) == {}
    assert slow_sites({"edge-1": 0.150}, crossover_s=0.080) == {}  # one site: nowhere better known
    assert slow_sites({"edge-0": 0.010, "edge-1": 0.150}, crossover_s=None) == {}
