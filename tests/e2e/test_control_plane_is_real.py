"""The local control plane schedules, validates and garbage-collects like a real cluster."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.waiting import wait_for, watch_until

pytestmark = pytest.mark.cluster

PAUSE = "registry.k8s.io/pause:3.10"


def _running(pod) -> bool:
    return pod.status.phase == "Running"


def _node_labels(cluster, name: str) -> dict[str, str]:
    return cluster.core.read_node(name).metadata.labels


def test_default_node_set_has_edge_gpu_and_cloud_nodes(cluster):
    nodes = {n.metadata.name: n for n in cluster.core.list_node().items}
    edge = [n for n in nodes.values() if n.metadata.labels.get("dsd.dev/tier") == "edge"]
    gpu = [n for n in nodes.values() if n.metadata.labels.get("nvidia.com/gpu.present") == "true"]
    assert len(edge) == 2 and len(gpu) == 2
    assert all("node-role.kubernetes.io/edge" in n.metadata.labels for n in edge)
    assert len({n.metadata.labels["topology.kubernetes.io/zone"] for n in edge}) == 2
    assert all(n.status.allocatable.get("nvidia.com/gpu") == "1" for n in gpu)
    assert all(any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in n.spec.taints) for n in gpu)
    assert any(n.metadata.labels.get("dsd.dev/tier") == "cloud" and n not in gpu for n in nodes.values())


def test_deployment_selecting_edge_lands_only_on_edge_nodes_and_runs(cluster, namespace):
    cluster.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "edge-app"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "edge-app"}},
            "template": {
                "metadata": {"labels": {"app": "edge-app"}},
                "spec": {"nodeSelector": {"dsd.dev/tier": "edge"},
                         "containers": [{"name": "c", "image": PAUSE}]},
            },
        },
    })
    pods = wait_for(
        lambda: (lambda items: items if len(items) == 4 and all(map(_running, items)) else None)(
            cluster.core.list_namespaced_pod(namespace, label_selector="app=edge-app").items),
        60, "4 running edge-app pods",
    )
    for pod in pods:
        assert _node_labels(cluster, pod.spec.node_name)["dsd.dev/tier"] == "edge"
    wait_for(lambda: (cluster.apps.read_namespaced_deployment(
        "edge-app", namespace).status.ready_replicas or 0) == 4, 60, "deployment ready 4/4")


def _gpu_pod(name: str, gpus: int) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": PAUSE, "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
    }


def test_gpu_pod_lands_on_a_gpu_node(cluster, namespace):
    cluster.core.create_namespaced_pod(namespace, _gpu_pod("gpu-1", 1))
    pod = watch_until(cluster.core.list_namespaced_pod, _running, 60, "gpu pod Running", namespace=namespace)
    assert _node_labels(cluster, pod.spec.node_name).get("nvidia.com/gpu.present") == "true"


def test_too_many_gpus_stays_pending_with_the_schedulers_reason(cluster, namespace):
    cluster.core.create_namespaced_pod(namespace, _gpu_pod("gpu-4", 4))

    def unschedulable(pod) -> bool:
        return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                   for c in (pod.status.conditions or []))

    pod = watch_until(cluster.core.list_namespaced_pod, unschedulable, 60, "Unschedulable condition",
                      namespace=namespace)
    message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert "Insufficient nvidia.com/gpu" in message
    assert pod.status.phase == "Pending" and not pod.spec.node_name


def test_crd_with_cel_rule_rejects_bad_object_with_the_rules_message(cluster):
    from kubernetes import client

    ext = client.ApiextensionsV1Api(cluster.api_client)
    crd_name = "widgets.celtest.dsd.dev"
    try:
        ext.delete_custom_resource_definition(crd_name)
    except ApiException as e:
        assert e.status == 404
    ext.create_custom_resource_definition({
        "metadata": {"name": crd_name},
        "spec": {
            "group": "celtest.dsd.dev",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                        "x-kubernetes-validations": [
                            {"rule": "self.min <= self.max", "message": "spec.min must be <= spec.max"}],
                    }},
                }},
            }],
        },
    })
    try:
        wait_for(lambda: any(c.type == "Established" and c.status == "True"
                             for c in (ext.read_custom_resource_definition(crd_name).status.conditions or [])),
                 30, "CRD Established")
        custom = client.CustomObjectsApi(cluster.api_client)
        good = {"apiVersion": "celtest.dsd.dev/v1", "kind": "Widget", "metadata": {"name": "ok"},
                "spec": {"min": 1, "max": 2}}
        wait_for(lambda: _try_create(custom, good), 30, "custom resource endpoint serving")
        bad = {**good, "metadata": {"name": "bad"}, "spec": {"min": 3, "max": 2}}
        with pytest.raises(ApiException) as err:
            custom.create_namespaced_custom_object("celtest.dsd.dev", "v1", "default", "widgets", bad)
        assert err.value.status == 422
        status = json.loads(err.value.body)
        assert "spec.min must be <= spec.max" in status["message"]
        assert status["details"]["causes"][0]["field"] == "spec"
    finally:
        ext.delete_custom_resource_definition(crd_name)


def _try_create(custom, obj) -> bool:
    try:
        custom.create_namespaced_custom_object("celtest.dsd.dev", "v1", "default", "widgets", obj)
        return True
    except ApiException as e:
        if e.status == 404:  # discovery not yet updated
            return False
        raise


def test_deleting_an_owner_garbage_collects_its_children(cluster, namespace):
    cluster.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "owner"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "owned"}},
            "template": {"metadata": {"labels": {"app": "owned"}},
                         "spec": {"containers": [{"name": "c", "image": PAUSE}]}},
        },
    })
    wait_for(lambda: len(cluster.apps.list_namespaced_replica_set(namespace).items) == 1, 30, "ReplicaSet")
    wait_for(lambda: len(cluster.core.list_namespaced_pod(namespace).items) == 2, 30, "2 pods")
    cluster.apps.delete_namespaced_deployment("owner", namespace, propagation_policy="Background")
    wait_for(lambda: not cluster.apps.list_namespaced_replica_set(namespace).items, 60, "ReplicaSet collected")
    wait_for(lambda: not cluster.core.list_namespaced_pod(namespace).items, 60, "pods collected")
