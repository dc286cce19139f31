"""Node-set YAML: validation errors name the field; groups expand to labelled, tainted nodes."""

import pytest

from dsd_devcluster.nodes import NodeSetError, load_node_set, node_manifests


def test_default_node_set_expands_to_five_nodes():
    names = [m["metadata"]["name"] for m in node_manifests(load_node_set())]
    assert names == ["edge-0", "edge-1", "gpu-0", "gpu-1", "cloud-cpu-0"]


def test_zones_are_assigned_round_robin(tmp_path):
    f = tmp_path / "n.yaml"
    f.write_text("nodes: [{name: e, count: 3, zones: [a, b]}]\n")
    zones = [m["metadata"]["labels"]["topology.kubernetes.io/zone"] for m in node_manifests(load_node_set(f))]
    assert zones == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("nodes: [{name: Bad_Name}]", "nodes.0.name"),
        ("nodes: [{name: ok, count: 0}]", "nodes.0.count"),
        ("nodes: [{name: ok, taints: [{key: k, effect: Sometimes}]}]", "nodes.0.taints.0.effect"),
        ("nodes: [{name: ok, colour: red}]", "nodes.0.colour"),
    ],
)
def test_invalid_node_set_names_the_field(tmp_path, text, field):
    f = tmp_path / "n.yaml"
    f.write_text(text)
    with pytest.raises(NodeSetError, match=field.replace(".", r"\.")):
        load_node_set(f)
