"""Several named clusters run side by side: own ports, etcd, kubeconfig and node set; CLI reports them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kubernetes import client, config

from dsd_devcluster import start_cluster, stop_cluster

pytestmark = pytest.mark.cluster
DSD = [sys.executable, "-m", "dsd_cli.main"]


def test_second_cluster_is_independent_and_uses_its_node_file(cluster, tmp_path):
    nodes = tmp_path / "edge-only.yaml"
    nodes.write_text("nodes:\n- name: k3s-edge\n  labels: {dsd.dev/tier: edge}\n")
    second = start_cluster("pytest-second", nodes)
    try:
        assert second.kubeconfig != cluster.kubeconfig
        if cluster.handle is not None:
            assert set(second.ports.values()).isdisjoint(cluster.handle.ports.values())
        api = config.new_client_from_config(config_file=str(second.kubeconfig))
        try:
            core = client.CoreV1Api(api)
            assert [n.metadata.name for n in core.list_node().items] == ["k3s-edge-0"]
            core.create_namespace({"metadata": {"name": "only-in-second"}})
            names = {ns.metadata.name for ns in cluster.core.list_namespace().items}
            assert "only-in-second" not in names
        finally:
            api.close()
        out = subprocess.run([*DSD, "dev", "cluster", "status", "--json"], capture_output=True, text=True,
                             check=True)
        rows = {r["name"]: r for r in json.loads(out.stdout)}
        assert rows["pytest-second"]["healthy"] is True
        assert rows["pytest-second"]["kubeconfig"] == str(second.kubeconfig)
    finally:
        assert stop_cluster("pytest-second")
    out = subprocess.run([*DSD, "dev", "cluster", "status", "--name", "pytest-second"], capture_output=True,
                         text=True)
    assert out.returncode == 1
