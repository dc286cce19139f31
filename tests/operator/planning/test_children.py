"""The planner maps a spec to children: placement, wiring, and which changes touch pod templates."""

from __future__ import annotations

from typing import Any

import pytest

from dsd_operator.api import v1alpha1 as api
from dsd_operator.planning import children

OWNER = children.Owner("llm", "ns", "uid-1")


def _spec(**overrides: Any) -> api.DSDDeploymentSpec:
    base: dict[str, Any] = {"target": {"model": {"uri": "builtin:smollm2-135m-instruct"}},
                            "draft": {"model": {"uri": "builtin:smollm2-135m-draft"}}}
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return api.DSDDeploymentSpec.model_validate(base)


def _by_key(spec: api.DSDDeploymentSpec, replicas: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    return {f"{m['kind']}/{m['metadata']['name']}": m
            for m in children.workload(OWNER, spec, replicas or {"target": 1, "draft": 1})}


def _pod(spec: api.DSDDeploymentSpec, role: str) -> dict[str, Any]:
    return _by_key(spec)[f"Deployment/llm-{role}"]["spec"]["template"]["spec"]


def test_draft_defaults_to_edge_nodes_with_the_edge_taint_tolerated_and_zone_spread():
    pod = _pod(_spec(), "draft")
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert [t["matchExpressions"][0]["key"] for t in terms] == ["node-role.kubernetes.io/edge", "dsd.dev/tier"]
    assert pod["tolerations"] == [{"key": "node-role.kubernetes.io/edge", "operator": "Exists"}]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"


def test_target_defaults_to_one_gpu_and_tolerates_the_gpu_taint():
    pod = _pod(_spec(), "target")
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "affinity" not in pod


def test_placement_overrides_replace_the_defaults_part_by_part():
    spec = _spec(draft={"placement": {"nodeSelector": {"site": "store-7"}, "spreadAcrossZones": False}})
    pod = _pod(spec, "draft")
    assert pod["nodeSelector"] == {"site": "store-7"} and "affinity" not in pod
    assert "topologySpreadConstraints" not in pod
    assert pod["tolerations"] == [{"key": "node-role.kubernetes.io/edge", "operator": "Exists"}]


@pytest.mark.parametrize(("model", "argument"), [
    ({"path": "/opt/models/x"}, "/opt/models/x"),
    ({"pvc": {"claimName": "weights", "subPath": "llama/8b"}}, "/models/llama/8b"),
    ({"pvc": {"claimName": "weights"}}, "/models"),
    ({"uri": "builtin:smollm2-135m-instruct"}, "builtin:smollm2-135m-instruct"),
])
def test_model_references_become_the_runtime_model_argument(model, argument):
    pod = _pod(_spec(target={"model": model}), "target")
    args = pod["containers"][0]["args"]
    assert args[args.index("--model") + 1] == argument
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == (["weights"] if "pvc" in model else [])


def test_speculation_changes_touch_only_the_configmap():
    before, after = _by_key(_spec()), _by_key(_spec(speculation={"gamma": 7, "gammaMax": 9, "policy": "adaptive"}))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"ConfigMap/llm-runtime"}
    assert "gamma: 7" in after["ConfigMap/llm-runtime"]["data"]["runtime.yaml"]


def test_a_model_change_touches_only_that_roles_deployment():
    before, after = _by_key(_spec()), _by_key(_spec(target={"model": {"path": "/m/other"}}))
    assert {k for k in before if before[k] != after[k]} == {"Deployment/llm-target"}


def test_replicas_come_from_the_scalers_not_the_spec():
    plan = _by_key(_spec(draft={"replicas": 1}), {"target": 2, "draft": 5})
    assert plan["Deployment/llm-draft"]["spec"]["replicas"] == 5
    assert plan["Deployment/llm-target"]["spec"]["replicas"] == 2


def test_draft_is_wired_to_the_target_service_and_the_watched_config():
    args = _pod(_spec(), "draft")["containers"][0]["args"]
    assert args[args.index("--target") + 1] == "llm-target.ns.svc:50051"
    assert args[args.index("--config") + 1] == "/etc/dsd/runtime.yaml"


def test_every_child_is_owned_and_labelled():
    for manifest in _by_key(_spec()).values():
        meta = manifest["metadata"]
        assert meta["ownerReferences"][0]["uid"] == "uid-1" and meta["ownerReferences"][0]["controller"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "dsd-operator"
        assert meta["labels"]["app.kubernetes.io/instance"] == "llm"


def test_node_port_exposure():
    svc = _by_key(_spec(api={"serviceType": "NodePort", "nodePort": 30080}))["Service/llm-draft"]["spec"]
    assert svc["type"] == "NodePort" and svc["ports"][0]["nodePort"] == 30080


def test_an_omitted_draft_model_means_model_free_drafting_with_the_targets_tokenizer():
    spec = api.DSDDeploymentSpec.model_validate({"target": {"model": {"pvc": {"claimName": "weights",
                                                                               "subPath": "llama"}}}})
    pod = _pod(spec, "draft")
    args = pod["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "none"
    assert args[args.index("--tokenizer") + 1] == "/models/llama"
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["weights"], "the tokenizer is read from the target's volume"


def test_targets_roll_out_without_a_surge_pod_so_one_free_gpu_is_enough():
    by_key = _by_key(_spec())
    assert by_key["Deployment/llm-target"]["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert "strategy" not in by_key["Deployment/llm-draft"]["spec"]


def _window(spec: api.DSDDeploymentSpec, loop: children.LoopDecisions | None) -> dict[str, Any]:
    return children.runtime_config(spec, loop)["window"]


def test_without_the_loop_the_window_is_the_spec_and_with_it_the_loops_gamma_bounds_every_window():
    spec = _spec(speculation={"gamma": 4, "gammaMax": 8})
    assert _window(spec, None) == {"gamma": 4, "gamma_min": 1, "gamma_max": 8, "policy": "static",
                                   "pipelined": True, "mode": "speculate"}
    assert _window(spec, children.LoopDecisions(6)) | {"mode": "x"} == {
        "gamma": 6, "gamma_min": 1, "gamma_max": 6, "policy": "static", "pipelined": True, "mode": "x"}
    assert _window(spec, children.LoopDecisions(3, "off"))["mode"] == "off"
    adaptive = _spec(speculation={"gamma": 4, "gammaMax": 8, "policy": "adaptive"})
    assert (_window(adaptive, children.LoopDecisions(2))["gamma"],
            _window(adaptive, children.LoopDecisions(2))["gamma_max"]) == (2, 2)


def test_avoided_nodes_are_excluded_from_every_edge_term_but_not_from_the_target():
    spec = _spec()
    by_key = {f"{m['kind']}/{m['metadata']['name']}": m for m in children.workload(
        OWNER, spec, {"target": 1, "draft": 1}, children.LoopDecisions(4, avoid_nodes=("edge-1",)))}
    draft = by_key["Deployment/llm-draft"]["spec"]["template"]["spec"]
    terms = draft["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert all(t["matchFields"] == [{"key": "metadata.name", "operator": "NotIn", "values": ["edge-1"]}]
               for t in terms) and len(terms) == 2
    assert "affinity" not in by_key["Deployment/llm-target"]["spec"]["template"]["spec"]


def test_avoided_nodes_beside_a_node_selector():
    spec = _spec(draft={"placement": {"nodeSelector": {"site": "a"}}})
    pod = {f"{m['kind']}/{m['metadata']['name']}": m for m in children.workload(
        OWNER, spec, {"target": 1, "draft": 1}, children.LoopDecisions(4, avoid_nodes=("n1",)))
    }["Deployment/llm-draft"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"site": "a"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}]
