"""Each role scales through its DSDRoleScaler's /scale (kubectl scale, HPA, KEDA); the operator never resets it."""

from __future__ import annotations

import pytest

from tests.operator.e2e.conftest import GROUP, VERSION, kubectl, sample
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _replicas(cluster, namespace: str, name: str) -> int:
    return int(cluster.apps.read_namespaced_deployment(name, namespace).spec.replicas)


def test_kubectl_scale_on_a_role_is_kept(cluster, dsd, namespace, operator):
    dsd.create(sample("minimal"))
    dsd.wait_condition("smollm2", "Ready", "True")

    kubectl(cluster, "scale", "-n", namespace, "dsdrolescaler/smollm2-draft", "--replicas=3")
    wait_for(lambda: _replicas(cluster, namespace, "smollm2-draft") == 3, 30, "draft Deployment at 3 replicas")
    wait_for(lambda: dsd.get("smollm2")["status"]["draft"]["summary"] == "3/3", 60, "draft 3/3 ready")
    seen = operator.counter("dsd_operator_reconciles_total", namespace=namespace, name="smollm2")
    wait_for(lambda: operator.counter("dsd_operator_reconciles_total", namespace=namespace,
                                      name="smollm2") >= seen + 3, 60, "three more reconciles (resyncs)")
    assert _replicas(cluster, namespace, "smollm2-draft") == 3
    assert _replicas(cluster, namespace, "smollm2-target") == 1
    assert dsd.get("smollm2")["spec"]["draft"]["replicas"] == 1

    scale = dsd.custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, "dsdrolescalers",
                                                          "smollm2-draft")
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "dsd.dev/deployment=smollm2,dsd.dev/role=draft"

    dsd.patch_spec("smollm2", {"draft": {"replicas": 2}})  # a later spec change wins in turn
    wait_for(lambda: _replicas(cluster, namespace, "smollm2-draft") == 2, 30, "draft Deployment at 2 replicas")
