"""A chart installed with watchNamespaces gets RoleBindings only, and its operator works with exactly that."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.operator.e2e.conftest import REPO, OperatorProcess, kubectl, sample, service_account_kubeconfig, tool
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def test_operator_watching_one_namespace_needs_no_cluster_wide_rights(cluster, chart_release, namespace, tmp_path):
    helm = [tool("helm"), "--kubeconfig", str(cluster.kubeconfig)]
    release, account = "dsd-ns", "dsd-ns-dsd-operator"  # the chart names its ServiceAccount <release>-<chart>
    proc = subprocess.run([*helm, "install", release, str(REPO / "charts" / "dsd-operator"), "-n", "dsd-system",
                           "--set", "replicaCount=0", "--set", f"watchNamespaces={{{namespace}}}", "--wait"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    op = OperatorProcess(service_account_kubeconfig(cluster, tmp_path / "kubeconfig", account),
                         tmp_path / "operator.log", namespaces=[namespace])
    try:
        rights = kubectl(cluster, "auth", "can-i", "list", "deployments.apps", "-A",
                         f"--as=system:serviceaccount:dsd-system:{account}", check=False).stdout.strip()
        assert rights == "no"  # no cluster-wide rights on workloads
        op.start()
        kubectl(cluster, "apply", "-n", namespace, "-f", "-", input_text=yaml.safe_dump(sample("minimal")))
        wait_for(lambda: op.counter("dsd_operator_reconciles_total", namespace=namespace, name="smollm2") >= 3, 60,
                 "reconciles by the namespaced operator (including a resync)")
        forbidden = [line for line in op.log_path.read_text().splitlines() if "Forbidden" in line]
        assert not forbidden, "\n".join(line[:400] for line in forbidden[:3])
    finally:
        op.stop()
        subprocess.run([*helm, "uninstall", release, "-n", "dsd-system"], capture_output=True, check=False)
