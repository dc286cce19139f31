"""The pure parts of real nodes: which groups become real, what each node advertises, and an address plan in
which clusters side by side never overlap and every address lies inside the blackholed ranges."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dsd_devcluster import network
from dsd_devcluster.nodes import (
    NodeSetError,
    load_node_set,
    node_manifests,
    parse_real_nodes,
    real_node_specs,
    with_real_nodes,
)
from dsd_devcluster.prometheus import pod_discovery_job


def test_real_nodes_flag_replaces_only_the_named_groups():
    node_set = with_real_nodes(load_node_set(), parse_real_nodes("edge=1,gpu=1"))
    specs = {s["name"]: s for s in real_node_specs(node_set)}
    assert set(specs) == {"edge-0", "gpu-0"}
    assert specs["gpu-0"]["extended"] == {"nvidia.com/gpu": "1"}, "cpu and memory are the machine's own"
    assert specs["gpu-0"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert specs["edge-0"]["labels"]["node-role.kubernetes.io/edge"] == ""
    assert [m["metadata"]["name"] for m in node_manifests(node_set)] == ["cloud-cpu-0"], "the rest stay kwok"


@pytest.mark.parametrize("text, message", [
    ("edge", "GROUP=COUNT"), ("edge=0", "COUNT >= 1"), ("edge=x", "GROUP=COUNT"),
])
def test_malformed_real_nodes_flag_is_refused(text, message):
    with pytest.raises(NodeSetError, match=message):
        parse_real_nodes(text)


def test_an_unknown_group_is_named():
    with pytest.raises(NodeSetError, match=r"\['tpu'\]"):
        with_real_nodes(load_node_set(), {"tpu": 1})


def test_slots_never_overlap_and_stay_inside_the_blackholes():
    blackholes = [ipaddress.ip_network(c) for c in network.BLACKHOLES]
    seen: set[ipaddress.IPv4Network] = set()
    for slot in range(network.MAX_SLOTS):
        plan = network.SlotPlan(slot)
        ranges = [ipaddress.ip_network(plan.node_range), ipaddress.ip_network(plan.pod_range)]
        for r in ranges:
            assert any(r.subnet_of(b) for b in blackholes)
            assert not any(r.overlaps(other) for other in seen)
        seen.update(ranges)
        for i in range(network.MAX_NODES_PER_SLOT):
            a = plan.node(i, "c", f"n-{i}")
            assert ipaddress.ip_address(a.node_ip) in ranges[0]
            assert ipaddress.ip_network(a.pod_subnet).subnet_of(ranges[1])
            assert not ipaddress.ip_network(a.pod_subnet).overlaps(ipaddress.ip_network(network.KWOK_POD_CIDR))
            assert len(a.host_if) <= 15, "Linux interface names are at most 15 characters"
        assert ipaddress.ip_address(plan.gateway) in ranges[0]
    with pytest.raises(network.NetworkError, match="at most"):
        network.SlotPlan(0).node(network.MAX_NODES_PER_SLOT, "c", "n")


def test_pod_discovery_keeps_only_annotated_pods_on_real_nodes():
    job = pod_discovery_job(Path("/k/config"), ["edge-0", "gpu-0"])
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]  # type: ignore[union-attr]
    assert {"regex": "true", "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
            "action": "keep"} in keep
    assert any(r["regex"] == "(edge-0|gpu-0)" for r in keep)
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": "/k/config"}]


def test_a_node_file_can_mix_real_and_kwok_groups(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text("nodes:\n"
                    "  - {name: edge, count: 2, real: true, labels: {dsd.dev/tier: edge}}\n"
                    "  - {name: edge-sim, count: 3, labels: {dsd.dev/tier: edge}}\n")
    node_set = load_node_set(path)
    assert [s["name"] for s in real_node_specs(node_set)] == ["edge-0", "edge-1"]
    assert [m["metadata"]["name"] for m in node_manifests(node_set)] == ["edge-sim-0", "edge-sim-1", "edge-sim-2"]
