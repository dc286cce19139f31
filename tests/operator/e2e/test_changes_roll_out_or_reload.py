"""Speculation changes reach the drafts through the ConfigMap without new pods; template changes roll out;
deleting the resource removes every child."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from tests.operator.e2e.conftest import GROUP, VERSION, sample
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _pod_uids(dsd, name: str) -> set[str]:
    return {p.metadata.uid for role in ("target", "draft") for p in dsd.pods(name, role)}


def _generations(cluster, namespace: str, name: str) -> dict[str, int]:
    return {role: cluster.apps.read_namespaced_deployment(f"{name}-{role}", namespace).metadata.generation
            for role in ("target", "draft")}


def test_gamma_change_updates_the_configmap_and_restarts_nothing(cluster, dsd, namespace):
    dsd.create(sample("minimal"))
    dsd.wait_condition("smollm2", "Ready", "True")
    pods, generations = _pod_uids(dsd, "smollm2"), _generations(cluster, namespace, "smollm2")

    dsd.patch_spec("smollm2", {"speculation": {"gamma": 6, "policy": "adaptive"}})
    config = wait_for(lambda: (lambda d: d if "gamma: 6" in d else None)(
        cluster.core.read_namespaced_config_map("smollm2-runtime", namespace).data["runtime.yaml"]), 30,
        "the ConfigMap to carry gamma 6")
    assert "policy: adaptive" in config
    wait_for(lambda: dsd.get("smollm2")["status"].get("gamma") == 6, 30, "status.gamma == 6")
    assert _generations(cluster, namespace, "smollm2") == generations
    assert _pod_uids(dsd, "smollm2") == pods
    assert dsd.events("SpeculationConfigUpdated")


def test_target_model_change_rolls_out_the_target_only(cluster, dsd, namespace):
    # With a draft model of its own (a model-free draft reads the target's tokenizer, so it follows the target).
    body = sample("minimal")
    body["spec"]["draft"] = {"model": {"uri": "builtin:smollm2-135m-draft"}}
    dsd.create(body)
    dsd.wait_condition("smollm2", "Ready", "True")
    old_target = {p.metadata.uid for p in dsd.pods("smollm2", "target")}
    draft_pods, generations = {p.metadata.uid for p in dsd.pods("smollm2", "draft")}, _generations(
        cluster, namespace, "smollm2")

    dsd.patch_spec("smollm2", {"target": {"model": {"uri": None, "path": "/models/smollm2-360m"}}})

    def rolled_out() -> bool:
        pods = dsd.pods("smollm2", "target")
        return bool(pods) and all(p.metadata.uid not in old_target and p.status.phase == "Running"
                                  and p.spec.containers[0].args[2] == "/models/smollm2-360m" for p in pods)

    wait_for(rolled_out, 60, "new target pods running the new model")
    dsd.wait_condition("smollm2", "Ready", "True")
    dsd.wait_condition("smollm2", "Progressing", "False")
    assert _generations(cluster, namespace, "smollm2")["target"] > generations["target"]
    assert _generations(cluster, namespace, "smollm2")["draft"] == generations["draft"]
    assert {p.metadata.uid for p in dsd.pods("smollm2", "draft")} == draft_pods


def test_deleting_the_resource_removes_every_child(cluster, dsd, namespace):
    dsd.create(sample("minimal"))
    dsd.wait_condition("smollm2", "Ready", "True")
    dsd.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "dsddeployments", "smollm2")
    selector = "dsd.dev/deployment=smollm2"

    def leftovers() -> list[str]:
        found = [d.metadata.name for d in cluster.apps.list_namespaced_deployment(
            namespace, label_selector=selector).items]
        found += [s.metadata.name for s in cluster.core.list_namespaced_service(namespace,
                                                                                label_selector=selector).items]
        found += [c.metadata.name for c in cluster.core.list_namespaced_config_map(
            namespace, label_selector=selector).items]
        found += [s["metadata"]["name"] for s in dsd.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "dsdrolescalers", label_selector=selector)["items"]]
        found += [p.metadata.name for p in cluster.core.list_namespaced_pod(namespace, label_selector=selector).items]
        return found

    wait_for(lambda: not leftovers() or None, 60, "every child to be garbage-collected")
    with pytest.raises(ApiException) as e:
        dsd.get("smollm2")
    assert e.value.status == 404


def test_a_model_change_completes_when_every_gpu_is_taken(cluster, dsd, namespace):
    """Two target replicas on the two GPU nodes: no GPU is free for a surge pod, yet the rollout finishes."""
    body = sample("minimal")
    body["spec"]["target"]["replicas"] = 2
    dsd.create(body)
    dsd.wait_condition("smollm2", "Ready", "True", timeout_s=90)
    old = {p.metadata.uid for p in dsd.pods("smollm2", "target")}
    dsd.patch_spec("smollm2", {"target": {"model": {"uri": None, "path": "/models/smollm2-360m"}}})

    def rolled_out() -> bool:
        pods = [p for p in dsd.pods("smollm2", "target") if p.metadata.deletion_timestamp is None]
        return len(pods) == 2 and all(p.metadata.uid not in old and p.status.phase == "Running"
                                      and p.spec.containers[0].args[2] == "/models/smollm2-360m" for p in pods)

    wait_for(rolled_out, 120, "both target pods replaced, one at a time", interval_s=0.5)
